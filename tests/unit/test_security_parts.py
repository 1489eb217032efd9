"""The pure parts of security: roles, grants in the cluster map, the allow-list file, key files."""

from __future__ import annotations

import os
import stat

import pytest
import zmq.auth

from hcstore.errors import InvalidRequest, LocalFileError, ObjectNotFound
from hcstore.security import keys, roles
from hcstore.security.allow_list import read_allow_list, with_key, without_key, write_allow_list
from hcstore.wire import protocol
from placement import ClusterMap, Grant, Node

KEY = keys.generate().public


def test_every_operation_has_exactly_one_least_role():
    assert set(roles.AGENT_OPERATIONS) == set(protocol.OPERATIONS)
    assert set(roles.CONTROLLER_OPERATIONS) == set(protocol.CONTROLLER_OPERATIONS)
    assert set(roles.AGENT_OPERATIONS.values()) | set(roles.CONTROLLER_OPERATIONS.values()) <= set(roles.RANK)


@pytest.mark.parametrize(
    "role, needed, allowed",
    [
        ("client", "client", True),
        ("client", "node", False),
        ("client", "admin", False),
        ("node", "client", True),
        ("node", "admin", False),
        ("admin", "node", True),
        (None, "client", False),
        ("root", "client", False),
    ],
)
def test_roles_nest(role, needed, allowed):
    assert roles.permits(role, needed) is allowed


def test_a_map_carries_its_grants_and_node_keys_through_every_change():
    grant = Grant(KEY, "node", "n1")
    cluster_map = ClusterMap(3, (Node("n1", "tcp://a:1", key=KEY), Node("n2")), (grant,))
    assert ClusterMap.from_dict(cluster_map.to_dict()) == cluster_map
    assert cluster_map.grant(KEY) == grant and cluster_map.grant(keys.generate().public) is None
    changed = cluster_map.with_state("n1", "down").with_node(Node("n3")).without_node("n2")
    assert changed.grants == (grant,) and changed.node("n1").key == KEY
    assert "keys" not in ClusterMap(1, (Node("n1"),)).to_dict()  # a map without keys reads as it always has


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"key": "short", "role": "client"}, "grant.key"),
        ({"key": KEY, "role": "root"}, "grant.role"),
        ({"key": KEY, "role": "node"}, "grant.name"),  # a node key must be bound to a node
        ({"key": KEY, "role": "client", "extra": 1}, "unknown"),
    ],
)
def test_bad_grants_are_refused_naming_the_field(entry, needle):
    with pytest.raises(ValueError, match=needle):
        ClusterMap.from_dict({"epoch": 1, "nodes": [], "keys": [entry]})


def test_duplicate_keys_in_a_map_are_refused():
    with pytest.raises(ValueError, match="duplicate key"):
        ClusterMap(1, (), (Grant(KEY, "client"), Grant(KEY, "admin", "x")))


def test_allow_list_edits(tmp_path):
    admin, client = keys.generate().public, keys.generate().public
    grants = with_key(with_key((), admin, "admin", "ops"), client, "client", "alice")
    assert with_key(grants, client, "admin", "alice") != grants  # a key's role is replaced, not duplicated
    assert len(with_key(grants, client, "admin", "alice")) == 2
    with pytest.raises(InvalidRequest, match="grant.role"):
        with_key(grants, client, "superuser")
    assert without_key(grants, client) == (Grant(admin, "admin", "ops"),)
    with pytest.raises(ObjectNotFound):
        without_key(grants, keys.generate().public)
    with pytest.raises(InvalidRequest, match="last admin"):
        without_key(grants, admin)
    path = tmp_path / "allow.json"
    assert read_allow_list(path) == ()
    write_allow_list(path, grants)
    assert set(read_allow_list(path)) == set(grants)
    path.write_text('{"keys": [{"key": "x", "role": "client"}]}')
    with pytest.raises(ValueError, match="allow.json"):
        read_allow_list(path)


def test_key_files_are_zeromq_certificates_with_a_private_secret(tmp_path):
    os.umask(0o022)
    pair = keys.create(tmp_path / "k", "n1")
    secret, public = tmp_path / "k" / "n1.key_secret", tmp_path / "k" / "n1.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert zmq.auth.load_certificate(str(secret)) == (pair.public.encode(), pair.secret.encode())
    assert zmq.auth.load_certificate(str(public)) == (pair.public.encode(), None)
    assert keys.create(tmp_path / "k", "n1") == pair  # never silently replaced
    assert keys.secret_pair(secret) == pair and keys.load(public).secret == ""
    assert keys.public_key(pair.public) == pair.public == keys.public_key(str(public))
    assert pair.secret not in repr(pair)
    with pytest.raises(LocalFileError, match="public key only"):
        keys.secret_pair(public)
    secret.chmod(0o640)
    with pytest.raises(LocalFileError, match="readable by others"):
        keys.secret_pair(secret)
    with pytest.raises(InvalidRequest):
        keys.public_key("not a key")
    with pytest.raises(InvalidRequest, match="plain file name"):
        keys.create(tmp_path, "../escape")
