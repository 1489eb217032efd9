"""An upload that is opened and then abandoned (its writer crashed, say) is reclaimed once the agent's
``upload_ttl`` has passed: its temporary file is deleted, the space it reserved is free again, and a put
that did not fit beside it fits afterwards.
"""

from __future__ import annotations

import pytest

from hcstore.errors import StoreFull, UploadNotFound
from integration_support import reconfigure_agent, seeded_bytes, wait_until

BUCKET = "expiry"
CAPACITY = 8 << 20  # per mountpath; writes stop at 90% of it
RESERVED = 5 << 20  # what the abandoned upload declares; one peer holds at most a quarter of the room ahead
FRAGMENT = 6 << 20  # fits on an empty node, not beside that quarter
TTL = 1.0  # seconds; the agent looks for expired uploads every few seconds
NODE = "n1"


def test_an_abandoned_upload_is_reclaimed_after_its_ttl(make_cluster):
    cluster = make_cluster(agents=3, ec="2+1", mountpaths_per_agent=1, capacity_bytes=CAPACITY)
    reconfigure_agent(cluster, NODE, upload_ttl=TTL)
    assert cluster.agent_config(NODE).upload_ttl == TTL
    tmp_dir = cluster.agent(NODE).mountpaths[0] / "tmp"
    big = seeded_bytes("big", 2 * FRAGMENT)  # EC 2+1: a fragment of FRAGMENT bytes on every node
    with cluster.client(request_timeout=5.0) as client:
        client.refresh()
        endpoint = client.endpoint(NODE)

        def stats():
            return client.transport.request(endpoint, "node_stats", {}).header

        before = stats()
        assert before["uploads"] == 0
        fields = {
            "bucket": BUCKET,
            "key": "abandoned",
            "gen": client.clock.now(),
            "idx": 0,
            "chunk_size": 1 << 20,
            "expected_bytes": RESERVED,
        }
        upload = client.transport.request(endpoint, "open", fields).header["upload"]
        opened = stats()
        assert opened["uploads"] == 1
        assert before["free"] - opened["free"] == before["free"] // 4  # its peer's share of the room
        assert [p.name for p in tmp_dir.glob("*.part")] == [f"{upload}.part"]
        with pytest.raises(StoreFull):  # the reservation is real: a fragment as big does not fit
            client.put(BUCKET, "big", big)

        wait_until(lambda: stats()["uploads"] == 0, timeout=TTL + 30, interval=0.2, what="the upload to expire")
        assert list(tmp_dir.glob("*.part")) == []
        assert stats()["free"] == before["free"]
        with pytest.raises(UploadNotFound):
            client.transport.request(endpoint, "write", {"upload": upload, "stripe": 0}, [bytes(1 << 20)])
        assert not client.put(BUCKET, "big", big).degraded
        assert client.get(BUCKET, "big") == big
