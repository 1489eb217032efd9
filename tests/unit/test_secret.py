"""The cluster secret's file: made once, private from its first byte, refused when others could read or replace it."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from hcstore.config import ControllerConfig
from hcstore.control.controller import Controller
from hcstore.errors import LocalFileError
from hcstore.files import create_bytes_atomic
from hcstore.secret import SECRET_BYTES, create_secret_file, read_secret_file


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_secret_is_made_once_private_and_kept(tmp_path):
    path = tmp_path / "state" / "keys" / "cluster.secret"
    old_umask = os.umask(0)  # the file is private by its own mode, not by the umask
    try:
        secret = create_secret_file(path)
    finally:
        os.umask(old_umask)
    assert len(secret) == SECRET_BYTES and path.read_bytes() == secret
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert create_secret_file(path) == secret  # a restart finds the same secret
    assert read_secret_file(path) == secret
    assert sorted(os.listdir(path.parent)) == ["cluster.secret"]  # no temporary file left behind


def test_racing_creators_all_get_the_one_secret(tmp_path):
    path = tmp_path / "keys" / "cluster.secret"
    found: list[bytes] = []
    threads = [threading.Thread(target=lambda: found.append(create_secret_file(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and set(found) == {path.read_bytes()}


def test_create_bytes_atomic_never_replaces(tmp_path):
    path = tmp_path / "f"
    assert create_bytes_atomic(path, b"first", mode=0o600)
    assert not create_bytes_atomic(path, b"second", mode=0o600)
    assert path.read_bytes() == b"first" and mode(path) == 0o600


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.chmod(0o644), "open to other users"),
        (lambda p: p.chmod(0o640), "open to other users"),
        (lambda p: p.parent.chmod(0o777), "open to other users"),
        (lambda p: p.write_bytes(b"short"), "exactly 32 bytes"),
        (lambda p: p.unlink(), "cannot read"),
    ],
)
def test_a_secret_file_others_could_read_or_replace_is_refused(tmp_path, damage, message):
    path = tmp_path / "keys" / "cluster.secret"
    create_secret_file(path)
    damage(path)
    with pytest.raises(LocalFileError, match=message):
        read_secret_file(path)


def test_a_symlink_is_not_followed(tmp_path):
    real = tmp_path / "keys" / "real.secret"
    create_secret_file(real)
    link = real.with_name("cluster.secret")
    link.symlink_to(real)
    with pytest.raises(LocalFileError, match="cannot read"):
        read_secret_file(link)


def test_a_controller_with_an_open_secret_file_does_not_start(tmp_path):
    path = tmp_path / "keys" / "cluster.secret"
    create_secret_file(path)
    path.chmod(0o644)
    with pytest.raises(LocalFileError, match="open to other users"):
        Controller(ControllerConfig(secret_file=str(path), metrics_port=-1))
