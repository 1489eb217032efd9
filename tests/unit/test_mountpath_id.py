"""The mountpath id survives a lost or torn id file, and a disk with fragments is never taken for a new one."""

from __future__ import annotations

import json

import pytest

from hcstore.errors import InvalidRequest
from hcstore.node.mountpath import ID_FILE, read_or_create_id


def _copies(path):
    return path / ID_FILE, path / "frags" / ID_FILE


def test_a_new_mountpath_gets_an_id_written_twice(tmp_path):
    mountpath_id = read_or_create_id(tmp_path)
    for copy in _copies(tmp_path):
        assert json.loads(copy.read_text()) == {"id": mountpath_id, "format": 1}
    assert read_or_create_id(tmp_path) == mountpath_id


@pytest.mark.parametrize("damage", ["empty", "torn", "missing"])
@pytest.mark.parametrize("which", [0, 1])
def test_a_damaged_copy_is_restored_from_the_other(tmp_path, damage, which):
    mountpath_id = read_or_create_id(tmp_path)
    copy = _copies(tmp_path)[which]
    if damage == "missing":
        copy.unlink()
    else:
        copy.write_text("" if damage == "empty" else '{"id": "ab')
    assert read_or_create_id(tmp_path) == mountpath_id
    assert json.loads(copy.read_text())["id"] == mountpath_id


def test_losing_both_copies_keeps_the_fragments_under_a_new_id(tmp_path, caplog):
    old = read_or_create_id(tmp_path)
    fragment = tmp_path / "frags" / "ab" / "abcd.gen.0.frag"
    fragment.parent.mkdir(parents=True)
    fragment.write_bytes(b"fragment bytes")
    for copy in _copies(tmp_path):
        copy.write_text("")
    new = read_or_create_id(tmp_path)
    assert new != old
    assert fragment.read_bytes() == b"fragment bytes"
    assert "holds 1 fragment files" in caplog.text


def test_an_id_file_of_a_future_format_is_refused_by_name(tmp_path):
    (tmp_path / ID_FILE).write_text(json.dumps({"id": "x" * 32, "format": 99}))
    with pytest.raises(InvalidRequest, match="format 99"):
        read_or_create_id(tmp_path)
