"""``hcstore ray deploy | status | down``: hcstore on the Ray cluster at ``--address``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

import ray

import ray_integration
from ray_integration.lookup import controller_actor


def run(args: argparse.Namespace, print_line: Callable[[str], None]) -> int:
    """Run ``hcstore ray deploy|status|down`` against the Ray cluster at ``args.address``; returns the exit code.

    Args:
        args: the parsed ``hcstore ray`` command line (``ray_command``, ``address`` and the deploy options).
        print_line: shows one line of output to the user.
    """
    ray.init(address=args.address, namespace="hcstore", logging_level=logging.WARNING, log_to_driver=False)
    try:
        if args.ray_command == "deploy":
            store = ray_integration.deploy(
                mountpaths=args.mountpath or None,
                ec=args.ec,
                agent={"durability": args.durability},
                controller_dir=args.controller_dir,
                insecure=args.insecure,
                timeout=args.timeout,
                progress=print_line,
            )
            print_line(f"hcstore serves on this Ray cluster; controller {store.controller}")
            keys = ray.get(controller_actor().key_directory.remote())
            with_keys = (
                ""
                if args.insecure
                else (f"HCSTORE_KEY={keys}/admin.key_secret HCSTORE_CONTROLLER_KEY={keys}/controller.key ")
            )
            print_line(
                f"object verbs, on the head node: {with_keys}hcstore --cluster {store.controller} ls"
                + ("   (INSECURE: no keys)" if args.insecure else "")
            )
        elif args.ray_command == "status":
            state = ray_integration.status()
            print_line(f"controller {state['endpoint']}, map epoch {state['map']['epoch']}")
            for node in state["map"]["nodes"]:
                print_line(f"  {node['id']:<22} {node['state']:<15} {node['endpoint']}")
            for event in state["events"][-10:]:
                print_line(f"  {event}")
        else:
            ray_integration.shutdown()
            print_line("hcstore stopped on this Ray cluster (data stays in the mountpaths)")
        return 0
    finally:
        ray.shutdown()
