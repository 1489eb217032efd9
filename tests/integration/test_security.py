"""CurveZMQ and roles against live agents and a live controller.

Each test is an attack that worked before every socket was authenticated, now refused: a peer
without a key, with an unknown key, or with a key of too low a role gets no data and no map and
changes nothing; a client that expects another server key does not connect; an agent's key
speaks for its own node only; a revoked key is refused on a connection it already had. After
every attack the daemons are alive and every object reads back exact.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from hcstore.cluster.source import ClusterSource
from hcstore.errors import AgentUnavailable, AuthenticationError, Forbidden, HCStoreError
from hcstore.security import keys
from hcstore.security.curve import INSECURE, Credentials
from hcstore.wire.transport import Transport
from integration_support import allow_key, cli_ok, run_cli, seeded_bytes, wait_until

BUCKET = "secure"
DENIED = (AuthenticationError, AgentUnavailable)


@pytest.fixture
def secured(make_cluster):
    """A 3-agent 2+1 cluster (keys made by `up`, as by default) holding two objects."""
    cluster = make_cluster(agents=3, ec="2+1")
    data = {"big": seeded_bytes("big", 300_001), "small": b"tiny"}
    with cluster.client(request_timeout=5.0) as client:
        for key, value in data.items():
            client.put(BUCKET, key, value)
    return cluster, data


def transport_as(credentials: Credentials) -> Transport:
    return Transport(connect_timeout=1.0, request_timeout=3.0, credentials=credentials)


def trusting(transport: Transport, cluster) -> Transport:
    """The transport, told every node's key and the controller's (as a client with the map would be)."""
    cluster_map = cluster.cluster_map()
    transport.trust_nodes((n.endpoint, n.key) for n in cluster_map.nodes)
    transport.trust(cluster.controller_endpoint(), keys.load(cluster.path / "keys" / "controller.key").public)
    return transport


def everything_intact(cluster, data) -> None:
    for agent in cluster.agents():
        assert agent.pid() is not None
        os.kill(agent.pid(), 0)
    os.kill(cluster.controller_pid(), 0)
    with cluster.client(request_timeout=5.0) as client:
        assert {n.id for n in client.refresh().nodes} == {"n1", "n2", "n3"}
        assert all(n.state == "alive" for n in client.cluster_map.nodes)
        for key, value in data.items():
            assert client.get(BUCKET, key) == value


def test_a_peer_without_a_key_gets_no_data_no_map_and_changes_nothing(secured):
    cluster, data = secured
    plain = transport_as(INSECURE)
    agent = cluster.cluster_map().node("n1").endpoint
    try:
        for endpoint, op, fields in (
            (agent, "buckets", {}),
            (agent, "list", {"bucket": BUCKET}),
            (agent, "retire", {"bucket": BUCKET, "key": "big", "gen": "9" * 19 + "-ffff-ffffffff"}),
            (cluster.controller_endpoint(), "get_map", {}),
            (cluster.controller_endpoint(), "node_admin", {"node": "n1", "action": "remove", "force": True}),
            (
                cluster.controller_endpoint(),
                "heartbeat",
                {"node": "evil", "endpoint": "tcp://127.0.0.1:1", "labels": {}, "weight": 1000},
            ),
        ):
            with pytest.raises(DENIED):
                plain.request(endpoint, op, fields)
    finally:
        plain.close()
    everything_intact(cluster, data)
    assert "evil" not in cluster.cluster_map()


def test_an_unknown_key_fails_the_handshake_with_a_clear_error(secured):
    cluster, data = secured
    stranger = trusting(transport_as(Credentials(keys.generate())), cluster)
    try:
        with pytest.raises(AuthenticationError, match="allow-list"):
            stranger.request(cluster.cluster_map().node("n2").endpoint, "read", _read_fields())
        with pytest.raises(AuthenticationError):
            stranger.request(cluster.controller_endpoint(), "get_map", {})
    finally:
        stranger.close()
    everything_intact(cluster, data)


def test_a_server_without_the_expected_key_is_not_talked_to(secured):
    cluster, data = secured
    client = transport_as(allow_key(cluster, "client", "alice"))
    impostor_key = keys.generate().public  # what a client told the wrong key for n1 expects
    endpoint = cluster.cluster_map().node("n1").endpoint
    client.trust(endpoint, impostor_key)
    try:
        with pytest.raises(AuthenticationError):
            client.request(endpoint, "buckets", {})
    finally:
        client.close()
    everything_intact(cluster, data)


def test_roles_bound_what_each_key_may_do(secured):
    cluster, data = secured
    alice = trusting(transport_as(allow_key(cluster, "client", "alice")), cluster)
    n1_key = Credentials(keys.secret_pair(cluster.path / "keys" / "n1.key_secret"))
    n1 = trusting(transport_as(n1_key), cluster)
    controller = cluster.controller_endpoint()
    n2 = cluster.cluster_map().node("n2")
    try:
        assert BUCKET in alice.request(n2.endpoint, "buckets", {}).header["buckets"]  # data: yes
        with pytest.raises(Forbidden, match="admin"):
            alice.request(controller, "node_admin", {"node": "n1", "action": "remove", "force": True})
        with pytest.raises(Forbidden, match="admin"):
            alice.request(controller, "keys", {"action": "add", "key": keys.generate().public, "role": "admin"})
        with pytest.raises(Forbidden, match="node"):
            alice.request(
                controller, "heartbeat", {"node": "evil", "endpoint": "tcp://127.0.0.1:1", "labels": {}, "weight": 1000}
            )
        with pytest.raises(Forbidden):
            alice.request(
                n2.endpoint, "drop", {"bucket": BUCKET, "key": "big", "gen": "0" * 19 + "-0000-00000000", "idx": 0}
            )
        with pytest.raises(Forbidden, match="admin"):
            alice.request(n2.endpoint, "maintain", {"job": "scrub"})
        # A node's key speaks for its own node only: n1 cannot re-point n2.
        with pytest.raises(Forbidden, match="bound"):
            n1.request(
                controller, "heartbeat", {"node": "n2", "endpoint": "tcp://127.0.0.1:1", "labels": {}, "weight": 1.0}
            )
    finally:
        alice.close()
        n1.close()
    assert cluster.cluster_map().node("n2").endpoint == n2.endpoint
    everything_intact(cluster, data)


def test_a_revoked_key_is_refused_on_the_connection_it_already_has_without_restarts(secured):
    cluster, data = secured
    pids = {a.node_id: a.pid() for a in cluster.agents()}
    pair = keys.generate()
    with ClusterSource.local(cluster.path).controller() as admin:
        epoch = admin.add_key(pair.public, "client", "bob") and admin.get_map().cluster_map.epoch
        bob = trusting(transport_as(Credentials(pair)), cluster)
        endpoint = cluster.cluster_map().node("n3").endpoint
        wait_until(lambda: _answers(bob, endpoint), timeout=10, what="n3 to admit the new key (map epoch)")
        admin.revoke_key(pair.public)
        assert admin.get_map().cluster_map.epoch > epoch
    try:
        wait_until(lambda: _refused(bob, endpoint), timeout=10, what="n3 to refuse the revoked key")
    finally:
        bob.close()
    assert {a.node_id: a.pid() for a in cluster.agents()} == pids  # nobody restarted
    everything_intact(cluster, data)


def test_the_last_admin_key_cannot_be_revoked(secured):
    cluster, _ = secured
    admin_key = keys.load(cluster.path / "keys" / "admin.key").public
    with ClusterSource.local(cluster.path).controller() as admin, pytest.raises(HCStoreError, match="last admin"):
        admin.revoke_key(admin_key)


def test_an_agent_without_its_key_file_does_not_start(secured):
    cluster, data = secured
    secret = cluster.path / "keys" / "n3.key_secret"
    cluster.stop("n3", sig=signal.SIGTERM)
    secret.chmod(0o644)  # readable by others: refused
    try:
        with pytest.raises(HCStoreError, match="agent n3 exited"):
            cluster.start("n3", timeout=20)
    finally:
        secret.chmod(0o600)
    assert "readable by others" in cluster.agent("n3").log_file.read_text()
    cluster.start("n3")
    everything_intact(cluster, data)


def _read_fields() -> dict:
    return {"bucket": BUCKET, "key": "big", "gen": "0" * 19 + "-0000-00000000", "idx": 0, "first": 0, "count": 1}


def _answers(transport: Transport, endpoint: str) -> bool:
    try:
        transport.request(endpoint, "buckets", {})
        return True
    except HCStoreError:
        return False


def _refused(transport: Transport, endpoint: str) -> bool:
    try:
        transport.request(endpoint, "buckets", {})
        return False
    except (Forbidden, AuthenticationError):
        return True


def test_an_insecure_cluster_must_be_asked_for_and_says_so(make_cluster, secured, tmp_path):
    cluster, _ = secured
    secure = json.loads(cli_ok(run_cli("--cluster", str(cluster.path), "status", "--json")).stdout)
    assert secure["security"] == "curve"
    plain = make_cluster(agents=3, ec="2+1", insecure=True)
    assert not (plain.path / "keys" / "admin.key_secret").exists()
    doc = json.loads(cli_ok(run_cli("--cluster", str(plain.path), "status", "--json")).stdout)
    assert doc["security"] == "insecure"
    shown = cli_ok(run_cli("--cluster", str(plain.path), "status", env={**os.environ, "FORCE_COLOR": "1"})).stdout
    assert b"INSECURE" in shown and b"\x1b[" in shown  # said, in colour (red)
    assert "INSECURE" in plain.agent("n1").log_file.read_text()
    with plain.client() as client:  # a plain cluster still works, for whoever reaches it
        client.put(BUCKET, "plain", b"no keys")
        assert client.get(BUCKET, "plain") == b"no keys"
