"""The chaos run of ``benchmarks/chaos.py``, short: a mixed workload while agents are killed, added and drained,
fragment files are corrupted and writer processes are killed mid-put.

Eight agents, EC 4+2, failure intervals of a second or so, a 1 s repair scan and
a 4 s scrub; three client threads put, overwrite, get and delete 60 keys of 0 B
to 1 MiB (and read 8 keys written once) for 30 s while up to m=2 agents at a
time are SIGKILLed and restarted (some after ``out_after``, so repair rebuilds
their fragments), one agent is added and one drained, bytes of committed
fragments are flipped on disk (within what each object tolerates), and writer
processes putting to 4 keys of their own are SIGKILLed at random moments. Every
read must be one whole acknowledged-or-in-flight version; then every agent
comes back, scrub and repair must settle, and every kind of wrong answer must
be zero. The long run is ``python benchmarks/chaos.py --seconds 600``.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos import Chaos, ChaosConfig, make_value, run_chaos  # noqa: E402
from hcstore import ObjectChanged  # noqa: E402
from integration_support import CHUNK, fragment_files_of, seeded_bytes, wait_until  # noqa: E402

SECONDS = 30.0


@pytest.mark.timeout(240)
def test_chaos_kill_corrupt_crash_add_drain_then_repair_settles(tmp_path):
    config = ChaosConfig(
        seconds=SECONDS,
        agents=8,
        ec="4+2",
        keys=60,
        clients=3,
        cold_keys=8,
        crash_keys=4,
        seed=3,
        settle_timeout=60.0,
        verbose=False,
    )
    report = run_chaos(tmp_path / "cluster", config)
    summary = report.summary()
    print(summary)
    if not report.ok:  # the event log explains what the faults were when it failed
        print("\n".join(report.events[-80:]))

    assert not report.driver_errors, summary
    # the chaos really happened
    assert report.kills >= 5 and report.restarts == report.kills, summary
    assert report.max_down_seen <= 2, summary
    assert report.added and report.drained, summary
    assert report.ops["get"] > 0 and report.ops["overwrite"] > 0 and report.ops["delete"] > 0, summary
    assert report.corruptions >= 3 and report.corruptions_healed >= 1, summary
    assert report.writers_started >= 3 and report.writers_killed >= 1, summary
    # no wrong answer of any kind, during the chaos or at the end
    assert report.wrong_answers == dict.fromkeys(report.wrong_answers, 0), summary
    # every key was checked, and scrub and repair brought every object back to k+m good fragments
    assert report.objects_checked == config.keys + config.cold_keys + config.crash_keys, summary
    assert report.settled, summary
    assert report.ok, summary


def test_the_checks_count_each_kind_of_wrong_answer():
    chaos = Chaos(None, ChaosConfig(verbose=False), log=print)  # type: ignore[arg-type]  # the checks need no cluster
    rng = random.Random(5)
    values = [make_value("k", 0, seq, 1000, rng) for seq in (1, 2, 3)]
    for seq, value in enumerate(values[:2], 1):  # two acknowledged puts, one after the other
        op = chaos.ledger.begin("put", "k", hashlib.sha256(value).hexdigest(), f"w0#{seq}")
        chaos.ledger.finish(op, True)
    t0 = time.monotonic()
    assert chaos.check_answer("k", values[1], t0) is not None
    assert chaos.report.wrong_answers == dict.fromkeys(chaos.report.wrong_answers, 0)

    assert chaos.check_answer("k", values[0], t0) is not None  # the older version after the newer was acknowledged
    assert chaos.report.stale_reads == 1
    for wrong in (values[0][:500] + values[1][500:], values[1][:-1], values[2], b"\x00" * 1000):
        assert chaos.check_answer("k", wrong, t0) is None  # mixed, torn, never written, garbage
    assert chaos.report.wrong_answers["wrong"] == 4
    assert not chaos.ledger.not_found_allowed("k", t0, time.monotonic())
    delete = chaos.ledger.begin("delete", "k")
    assert chaos.ledger.not_found_allowed("k", time.monotonic(), time.monotonic())  # a delete in flight
    chaos.ledger.finish(delete, True)
    assert [o.kind for o in chaos.ledger.final_candidates("k")] == ["delete"]
    chaos.report.settled = True
    assert not chaos.report.ok


def test_a_version_replaced_while_read_with_a_node_down_is_reported_as_changed(make_cluster):
    """The chaos run saw gets fail with NotEnoughFragments (final) instead of ObjectChanged (read again)."""
    cluster = make_cluster()
    with cluster.client(chunk_size=CHUNK, request_timeout=5.0) as client:
        client.put("changed", "key", seeded_bytes("v1", 3 * 4 * CHUNK))
        stream = client.open("changed", "key")  # pinned to the first version
        first = client.resolve("changed", "key").generation
        client.put("changed", "key", seeded_bytes("v2", 3 * 4 * CHUNK))  # retires the first version
        wait_until(lambda: not fragment_files_of(cluster, "changed", "key", first), what="the first version retired")
        cluster.kill(cluster.agents()[0].node_id)  # one node down: within what 4+2 tolerates
        with pytest.raises(ObjectChanged):
            stream.read()
