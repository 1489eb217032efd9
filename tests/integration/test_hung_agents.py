"""Agents that hang (SIGSTOP) while the cluster map still calls them alive.

A get whose first-choice fragment sits on a hung agent is hedged: after ``hedge_after`` another
fragment is asked, the read finishes from it with the exact bytes, and the hung agent is marked
slow rather than waited out until it counts as unavailable. A put whose placement includes a hung
agent gives up on it and lands on the next node of the key's ranking, fully protected.
"""

from __future__ import annotations

from hcstore.control.membership import Intervals
from integration_support import CHUNK, fragment_files_of, key_placed_on, seeded_bytes
from placement import place

BUCKET = "hung"
STRIPE = 4 * CHUNK
# Failure detection far slower than any test here: a hung agent stays "alive" in every map.
UNHURRIED = Intervals(heartbeat=0.5, suspect_after=60.0, down_after=90.0, out_after=600.0)


def test_a_read_around_a_hung_data_fragment_is_hedged(make_cluster, monkeypatch):
    cluster = make_cluster(intervals=UNHURRIED, scan_interval=600.0)
    data = seeded_bytes("hedged", 6 * STRIPE + 5)
    with cluster.client(chunk_size=CHUNK, request_timeout=30.0, hedge_after=0.3) as client:
        client.put(BUCKET, "hedged", data)
        assert client.get(BUCKET, "hedged") == data  # connections to the data fragments' agents
        version = client.resolve(BUCKET, "hedged")
        victim = version.locations[0]  # data fragment 0: first in every read plan
        endpoint = client.endpoint(victim)
        marked_slow = []
        mark_slow = client.transport.mark_slow
        monkeypatch.setattr(client.transport, "mark_slow", lambda ep: (marked_slow.append(ep), mark_slow(ep)))

        cluster.pause(victim)
        try:
            assert client.cluster_map.node(victim).state == "alive"
            got = client.get(BUCKET, "hedged")
        finally:
            cluster.resume(victim)
        assert got == data
        assert endpoint in marked_slow  # the read hedged around the hung agent...
        assert not client.transport.is_unavailable(endpoint)  # ...instead of waiting out its request timeout
        assert client.corruptions == []


def test_a_put_whose_placement_node_hangs_lands_on_the_next_node_of_the_ranking(make_cluster):
    cluster = make_cluster(agents=7, intervals=UNHURRIED, scan_interval=600.0)
    victim = "n3"
    cases = {  # key prefix: (size, k, m)
        "streamed": (5 * STRIPE + 3, 4, 2),  # open, write, prepare, commit
        "one-stripe": (100_000, 4, 2),  # one store message per fragment
        "replicated": (1000, 1, 2),  # one store message per copy
    }
    with cluster.client(chunk_size=CHUNK, request_timeout=10.0) as client:
        assert client.transport.request(client.endpoint(victim), "ping", {}).header["node"] == victim
        cluster.pause(victim)  # the client's connection to it stays open
        try:
            for prefix, (size, k, m) in cases.items():
                assert client.cluster_map.node(victim).state == "alive"
                key = key_placed_on(client.cluster_map, BUCKET, victim, k, m, prefix)
                planned = place(f"{BUCKET}/{key}", client.cluster_map, k, m)
                data = seeded_bytes(key, size)
                result = client.put(BUCKET, key, data)
                assert not result.degraded, prefix
                assert result.fragments == tuple(planned.spares[0] if n == victim else n for n in planned.nodes)
                assert client.get(BUCKET, key) == data, prefix
                held = fragment_files_of(cluster, BUCKET, key, result.generation)
                assert {index: node for index, (node, _path) in held.items()} == dict(enumerate(result.fragments))
        finally:
            cluster.resume(victim)
