"""The examples run as a user runs them, in their quick mode, and print the result they promise.

Each runs as a subprocess from the repository's ``examples/`` folder, starting and removing its own
cluster (a local hcstore cluster, or a Ray cluster of several nodes on this machine, kept on loopback).
The Ray examples take a minute or two even in their quick mode. The last test checks that every example
is run here, so a new one cannot go untested.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from integration_support import clean_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LIBRARIES = {"local_ray.py"}  # imported by the Ray examples, not run by itself
RUNS = {  # script: (arguments, lines its output must contain)
    "torch_dcp_save_load.py": ((), ("SIGKILLed agents n1 and n2", "OK: all")),
    "ray_object_refs.py": (
        ("--quick",),
        ("Ray Data: wrote 20 rows", "read every array back on the surviving nodes", "cluster stopped"),
    ),
    "ray_train_checkpoints.py": (
        ("--quick",),
        ("the restarted workers loaded the checkpoint", "final model loaded from epoch 3", "cluster stopped"),
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "script", [pytest.param(name, marks=[pytest.mark.ray] if name.startswith("ray_") else []) for name in sorted(RUNS)]
)
def test_example_runs_to_its_promised_result(script, tmp_path):
    arguments, lines = RUNS[script]
    env = {**clean_env(tmp_path), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        capture_output=True,
        cwd=tmp_path,
        env=env,  # every Ray node on 127.0.0.1, whatever the example imports first
        timeout=540,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, (proc.returncode, out[-4000:], proc.stderr.decode()[-4000:])
    for line in lines:
        assert line in out, (line, out[-4000:])


def test_every_example_is_run_here():
    assert {path.name for path in EXAMPLES.glob("*.py")} - LIBRARIES == set(RUNS)
