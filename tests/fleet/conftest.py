"""The `fleet` fixture: a local fleet of booted Debian hosts (playbooks/tests/fleet) for the playbook tests.

These tests are required on the CI machine: when the machine cannot run the fleet (not root, or
systemd-nspawn / debootstrap missing) the fixture fails and says what is missing; it never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FLEET = REPO / "playbooks" / "tests" / "fleet"
HOSTS = 3
DISKS_PER_HOST = 2
# The fixture's set-up (wheelhouse, and on a fresh machine debootstrap of the hosts' root filesystem)
# counts against the first test's timeout: the fleet tests get a longer one than the suite's default.
FLEET_TEST_TIMEOUT = 900
HOST_PYTHON = (3, 11)  # Debian bookworm's python3, which runs the wheels on the hosts
SYSTEM_PACKAGES = "apt-get install -y systemd-container debootstrap debian-archive-keyring openssh-client"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FLEET_TEST_TIMEOUT))


@dataclass
class Fleet:
    """A running fleet: inventory, wheel directory, host names and addresses, and ways to run commands."""

    inventory: Path
    wheels: Path
    hosts: list[str]
    addresses: dict[str, str]
    disks: dict[str, list[str]]
    package_url: str
    state: Path

    def run(self, cmd: Sequence[str | os.PathLike[str]], **kw) -> subprocess.CompletedProcess[str]:
        """Run cmd in the hub network namespace (where the hosts are reachable); never raises on failure."""
        opts = {"check": False, "capture_output": True, "text": True, **kw}
        return subprocess.run([str(FLEET), "exec", "--", *map(str, cmd)], **opts)

    def ssh(self, host: str, cmd: str, **kw) -> subprocess.CompletedProcess[str]:
        """Run a shell command line on host as root over SSH; never raises on failure."""
        opts = {"check": False, "capture_output": True, "text": True, **kw}
        return subprocess.run([str(FLEET), "ssh", "--state", str(self.state), host, "--", cmd], **opts)


def _machine_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("the fleet tests must run as root")
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "ssh", "ip", "losetup") if shutil.which(tool) is None]
    if missing:
        problems.append(f"missing {', '.join(missing)}: {SYSTEM_PACKAGES}")
    if sys.version_info[:2] != HOST_PYTHON:
        problems.append(
            f"the wheelhouse is built with Python {sys.version_info.major}.{sys.version_info.minor}, but the fleet "
            f"hosts run Python {HOST_PYTHON[0]}.{HOST_PYTHON[1]} (Debian bookworm): run the tests with that Python"
        )
    return problems


def _logs(state: Path) -> str:
    tails = []
    for log in sorted((state / "logs").glob("*.log")):
        tails.append(f"--- {log.name} (tail) ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
    return "\n".join(tails)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three booted hosts with two disks each, hcstore's wheels served to them; removed at the end."""
    problems = _machine_problems()
    if problems:
        pytest.fail("cannot run the fleet tests: " + "; ".join(problems), pytrace=False)
    wheels = tmp_path_factory.mktemp("fleet-wheels")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"building the wheelhouse failed:\n{built.stdout}\n{built.stderr}", pytrace=False)
    try:
        up = subprocess.run(
            [str(FLEET), "up", "--hosts", str(HOSTS), "--disks-per-host", str(DISKS_PER_HOST), "--wheels", str(wheels)],
            capture_output=True,
            text=True,
            check=False,
            timeout=FLEET_TEST_TIMEOUT - 60,
        )
        lines = up.stdout.strip().splitlines()
        if up.returncode != 0 or not lines:
            state = Path(os.environ.get("HCSTORE_FLEET_STATE") or "/var/tmp/hcstore-fleet")
            pytest.fail(f"fleet up failed ({up.returncode}):\n{up.stderr}\n{_logs(state)}", pytrace=False)
        inventory = Path(lines[-1])
        state = inventory.parent
        info = json.loads((state / "fleet.json").read_text())
        yield Fleet(
            inventory=inventory,
            wheels=wheels,
            hosts=list(info["hosts"]),
            addresses={name: host["address"] for name, host in info["hosts"].items()},
            disks={name: host["disks"] for name, host in info["hosts"].items()},
            package_url=info["package_url"],
            state=state,
        )
    finally:
        down = subprocess.run([str(FLEET), "down"], capture_output=True, text=True, check=False, timeout=300)
    if down.returncode != 0:
        pytest.fail(f"fleet down failed ({down.returncode}):\n{down.stderr}", pytrace=False)
