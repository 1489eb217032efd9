"""Core data-path benchmark: ``hcstore bench`` with the same options.

python benchmarks/bench_core.py [--agents 6] [--ec 4+2] [--size-mb 1024] [--durability commit] [--runs 3]
                                [--json] [--json-out FILE] [--repair]
"""

from __future__ import annotations

import sys

from hcstore.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
