"""Background work yields the CPU to the work clients wait for.

Linux keeps a nice value per thread, not per process: the threads of an agent
that repair, rebalance and scrub, and those that serve other agents' repair
reads, run ``background_nice`` steps below the agent's own priority, so that
when the cores are busy the scheduler gives them to the serving thread and the
client reads first. Raising a nice value needs no privilege; lowering it back
would, so a background thread stays background for its whole life.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

LOWEST = 19  # the largest nice value Linux allows


def run_as_background(nice: int) -> None:
    """Lower the calling thread to ``nice`` steps below its process's priority (no change for 0 or less).

    A thread already as low, or a system that refuses, keeps its priority: this only ever
    makes the thread yield more, and never fails.
    """
    if nice <= 0:
        return
    try:
        thread = threading.get_native_id()
        wanted = min(LOWEST, os.getpriority(os.PRIO_PROCESS, os.getpid()) + nice)
        if os.getpriority(os.PRIO_PROCESS, thread) < wanted:
            os.setpriority(os.PRIO_PROCESS, thread, wanted)
    except (OSError, AttributeError) as exc:  # not Linux, or not allowed: run as before
        log.info("background work keeps the normal priority: %s", exc)
