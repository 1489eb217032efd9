"""The allow-list file: the public keys a cluster admits, with their roles.

A JSON file ``{"keys": [{"key": "<Z85 public key>", "role": "client|node|admin", "name": "..."}]}``.
The controller starts from it and rewrites it (crash-safely) whenever a key is added or
revoked, so the list survives a restart; agents and clients get it inside the cluster map.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from hcstore.errors import InvalidRequest, ObjectNotFound
from hcstore.files import write_json_atomic
from placement import Grant


def read_allow_list(file: str | os.PathLike[str]) -> tuple[Grant, ...]:
    """The grants in an allow-list file; none when the file does not exist.

    Raises:
        ValueError: the file is not a valid allow-list; the message names what is wrong.
    """
    try:
        data = json.loads(Path(file).read_text())
    except FileNotFoundError:
        return ()
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f'{file}: an allow-list is {{"keys": [{{"key": ..., "role": ..., "name": ...}}, ...]}}')
    try:
        return tuple(Grant.from_dict(entry) for entry in data["keys"])
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


def write_allow_list(file: str | os.PathLike[str], grants: Iterable[Grant]) -> None:
    """Replace the allow-list file with ``grants`` (crash-safely)."""
    entries = [grant.to_dict() for grant in sorted(grants, key=lambda grant: grant.key)]
    write_json_atomic(Path(file), {"keys": entries}, indent=1)


def with_key(grants: tuple[Grant, ...], key: str, role: str, name: str = "") -> tuple[Grant, ...]:
    """``grants`` with ``key`` allowed as ``role`` (replacing what the key had).

    Raises:
        InvalidRequest: a malformed key, an unknown role, a node key without a node name.
    """
    try:
        grant = Grant(key, role, name)
    except ValueError as exc:
        raise InvalidRequest(f"cannot allow key {key!r}: {exc}") from None
    return (*(g for g in grants if g.key != key), grant)


def without_key(grants: tuple[Grant, ...], key: str) -> tuple[Grant, ...]:
    """``grants`` without ``key``.

    Raises:
        ObjectNotFound: the key is not in the allow-list.
        InvalidRequest: it is the last admin key (nobody could change the allow-list any more).
    """
    others = tuple(g for g in grants if g.key != key)
    if len(others) == len(grants):
        raise ObjectNotFound(f"the key {key!r} is not in the allow-list")
    if any(g.role == "admin" for g in grants) and not any(g.role == "admin" for g in others):
        raise InvalidRequest(f"the key {key!r} is the last admin key: add another admin key before revoking it")
    return others
