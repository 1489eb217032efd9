"""``hcstore keys`` prints keys exactly: a Z85 key may hold ``[``, ``]`` and ``/``, which must never be
read as console markup (a key like ``…[/x]…`` made the command fail; ``…[b]…`` would vanish from it)."""

from __future__ import annotations

import argparse
import io

from rich.console import Console

from hcstore.tools import keys_cli
from placement import Grant

TRICKY = "ab[/x]cd[b]ef[red]gh".ljust(40, "z")


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def test_listed_keys_are_printed_verbatim():
    console, out = _console()
    keys_cli._print([Grant(TRICKY, "client", "alice")], console)
    assert out.getvalue().split() == [TRICKY, "client", "alice"]


def test_a_created_key_is_printed_verbatim(tmp_path, monkeypatch):
    class Pair:
        public = TRICKY

    monkeypatch.setattr(keys_cli.keys, "create", lambda directory, name: Pair())
    console, out = _console()
    args = argparse.Namespace(keys_command="create", dir=str(tmp_path), name="n1")
    assert keys_cli.cmd_keys(args, console) == 0
    assert out.getvalue().splitlines()[0] == f"public key {TRICKY}"


def test_a_key_that_begins_with_a_dash_is_added_and_revoked_after_a_double_dash(tmp_path):
    """One Z85 key in 85 begins with ``-``, which argparse takes for an option unless ``--`` comes first
    (the playbooks pass every key that way)."""
    import zmq

    from hcstore.security.allow_list import read_allow_list
    from hcstore.tools.cli import main

    key = next(pub.decode() for pub, _secret in iter(zmq.curve_keypair, None) if pub.startswith(b"-"))
    allow = tmp_path / "allow.json"
    assert main(["keys", "add", "--role", "client", "--name", "dash", "--file", str(allow), "--", key]) == 0
    assert read_allow_list(allow) == (Grant(key, "client", "dash"),)
    assert main(["keys", "revoke", "--file", str(allow), "--", key]) == 0
    assert read_allow_list(allow) == ()
