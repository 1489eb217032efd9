"""The chaos run of ``benchmarks/chaos.py``, short: a mixed workload while agents are killed, added and drained.

Eight agents, EC 4+2, failure intervals of a second or so and a 1 s repair scan;
three client threads put, overwrite, get and delete 60 keys of 0 B to 1 MiB for
40 s while up to m=2 agents at a time are SIGKILLed and restarted (some after
``out_after``, so repair rebuilds their fragments), one agent is added and one
drained. Then every agent comes back and repair must settle: nothing lost,
nothing wrong, everything fully protected. The long run is
``python benchmarks/chaos.py --seconds 600``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.chaos import ChaosConfig, run_chaos  # noqa: E402

SECONDS = 40.0


@pytest.mark.timeout(240)
def test_chaos_kill_add_drain_then_repair_settles(tmp_path):
    config = ChaosConfig(seconds=SECONDS, agents=8, ec="4+2", keys=60, clients=3, seed=3, settle_timeout=60.0,
                         verbose=False)
    report = run_chaos(tmp_path / "cluster", config)
    summary = report.summary()
    print(summary)
    if not report.ok:                       # the event log explains what the faults were when it failed
        print("\n".join(report.events[-80:]))

    assert not report.driver_errors, summary
    # the chaos really happened
    assert report.kills >= 5 and report.restarts == report.kills, summary
    assert report.max_down_seen <= 2, summary
    assert report.added and report.drained, summary
    assert report.ops["get"] > 0 and report.ops["overwrite"] > 0 and report.ops["delete"] > 0, summary
    # never wrong bytes, not during the chaos and not at the end
    assert report.wrong_reads == 0, summary
    assert report.objects_wrong == 0 and report.objects_resurrected == 0, summary
    # nothing acknowledged is lost, and repair brings every object back to k+m fragments
    assert report.objects_checked == config.keys, summary
    assert report.objects_lost == 0, summary
    assert report.objects_unprotected == 0, summary
    assert report.settled, summary
