"""Core data-path benchmark (the same as ``hcstore bench``), with a JSON output option.

python benchmarks/bench_core.py [--agents 6] [--ec 4+2] [--size-mb 1024] [--durability commit] [--json-out F]
"""

from __future__ import annotations

import argparse

from hcstore.tools.bench import run_bench


def main() -> None:
    """Parse the command line and run the data-path benchmark."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--ec", default="4+2")
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--durability", default="commit", choices=["none", "commit", "always"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    run_bench(
        agents=args.agents,
        ec=args.ec,
        size_mb=args.size_mb,
        durability=args.durability,
        quick=args.quick,
        clients=args.clients,
        json_out=args.json_out,
    )


if __name__ == "__main__":
    main()
