"""The ``hcstore keys`` verbs: make key pairs, and manage the cluster's allow-list.

``hcstore keys create NAME [--dir DIR]`` makes a CurveZMQ key pair on this host (the secret
file, 0600, never leaves it) and prints the public key to hand to an admin.
``hcstore keys list``, ``add KEY --role ROLE [--name NAME]`` and ``revoke KEY`` change the
allow-list through the controller (an admin key); agents and clients learn the change with
the next cluster map, without a restart. ``KEY`` is the Z85 public key or its ``.key`` file.
With ``--file FILE`` they edit an allow-list file instead (the one a controller starts from:
its ``keys_file``), which is how the first admin key gets in before any controller runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from hcstore.cluster.source import ClusterSource
from hcstore.security import keys
from hcstore.security.allow_list import read_allow_list, with_key, without_key, write_allow_list
from placement import ROLES, Grant

DEFAULT_KEY_DIR = Path.home() / ".hcstore" / "keys"
KEY_HELP = 'a public key: Z85 text (40 characters; put `--` before one that begins with "-") or a .key file'


def add_verbs(sub: Any, console: Console) -> None:
    """Register ``keys create|list|add|revoke`` on the ``hcstore`` parser's subcommands."""
    verb: argparse.ArgumentParser = sub.add_parser("keys", help="make key pairs; list, add and revoke allowed keys")
    actions = verb.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key pair on this host and print its public key")
    create.add_argument("name", help="file name of the pair: NAME.key and NAME.key_secret")
    create.add_argument("--dir", default=str(DEFAULT_KEY_DIR), help=f"where to write it (default {DEFAULT_KEY_DIR})")
    listing = actions.add_parser("list", help="the cluster's allow-list")
    add = actions.add_parser("add", help="allow a public key (Z85 text or a .key file) with a role")
    add.add_argument("key", help=KEY_HELP)
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", default="", help="who holds it; for a node key, the node id it speaks for")
    revoke = actions.add_parser("revoke", help="remove a public key from the allow-list")
    revoke.add_argument("key", help=KEY_HELP)
    for action in (listing, add, revoke):
        action.add_argument(
            "--file", default=None, help="edit this allow-list file (a controller's keys_file) instead of the cluster's"
        )
    verb.set_defaults(func=lambda args: cmd_keys(args, console))


def cmd_keys(args: argparse.Namespace, console: Console) -> int:
    """Run one ``hcstore keys`` action."""
    if args.keys_command == "create":
        pair = keys.create(args.dir, args.name)
        directory = Path(args.dir).resolve()
        console.print(f"public key {pair.public}", highlight=False, markup=False)  # Z85 keys hold [ ] and /
        console.print(
            f"written to {keys.public_file(directory, args.name)} (public) and "
            f"{keys.secret_file(directory, args.name)} (secret, 0600: keep it on this host)",
            highlight=False,
            markup=False,
        )
        return 0
    if args.file:
        grants: list[Grant] = list(_edit_file(args))
    else:
        grants = _edit_cluster(args)
    _print(grants, console)
    return 0


def _edit_file(args: argparse.Namespace) -> tuple[Grant, ...]:
    grants = read_allow_list(args.file)
    if args.keys_command == "add":
        grants = with_key(grants, keys.public_key(args.key), args.role, args.name)
    elif args.keys_command == "revoke":
        grants = without_key(grants, keys.public_key(args.key))
    if args.keys_command != "list":
        write_allow_list(args.file, grants)
    return grants


def _edit_cluster(args: argparse.Namespace) -> list[Grant]:
    with ClusterSource.find(args.cluster).controller() as controller:
        if args.keys_command == "list":
            grants = controller.keys()
        elif args.keys_command == "add":
            grants = controller.add_key(keys.public_key(args.key), args.role, args.name)
        else:
            grants = controller.revoke_key(keys.public_key(args.key))
    return grants


def _print(grants: list[Grant] | tuple[Grant, ...], console: Console) -> None:
    for grant in grants:
        console.print(f"{grant.key}  {grant.role:<6}  {grant.name}", highlight=False, markup=False)
