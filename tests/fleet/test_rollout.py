"""The playbooks on a real fleet: 3 booted hosts with 2 loop-device disks each (the ``fleet`` fixture).

In order, sharing one fleet and one cluster (EC 1+1: see ``EC``):

1. ``site.yml`` formats, mounts and starts everything; the cluster is ready.
2. A second ``site.yml`` run changes nothing on any host.
3. A client in the hub namespace, with a client key allowed through ``hcstore_client_keys``,
   puts and reads objects through the controller's endpoint.
4. ``rolling_upgrade.yml`` moves every host to a newer wheel while a client writes and reads
   without pause: no request fails, every object reads back exact, every object is at full
   protection at the end, and every daemon reports the new version.
5. A host whose agent cannot start (an invalid setting for that host only) stops the next
   rollout (a rolling restart) at that host: the node is out of maintenance afterwards and the host after it is
   untouched. The host is then fixed by running the playbook again for it alone.
6. ``decommission.yml`` drains, removes and wipes a host; every object reads back exact.

Each playbook's wall time is printed (``pytest -s``) and written to ``timings.json`` in the
module's temporary directory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hcstore.security import keys

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
FLEET = PLAYBOOKS / "tests" / "fleet"
BIN = Path(sys.executable).parent
# 3 hosts, one to be decommissioned: every object must still be at full protection on the 2 left.
# A K+M object needs K+M nodes for that (its write quorum is max(K, M)+1 fragments on distinct
# nodes), so 2+1 would leave every object degraded and its drain could never finish; 1+1 fits.
EC = "1+1"
BUCKET = "rollout"
# The failing host's `wait ready` gives up after 10 s (its agent exits at once).
QUICK = {"hcstore_ready_timeout": 10}
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

# A client in the hub namespace: `put-get N PREFIX`, `workload STOP PREFIX PROGRESS` (until STOP
# exists), `verify SUMMARY` (every object of SUMMARY reads back exact); prints a JSON summary.
# Credentials from HCSTORE_KEY and HCSTORE_CONTROLLER_KEY; the cluster's EC from the controller.
CLIENT = r"""
import hashlib, json, random, sys, time, traceback
from pathlib import Path
import hcstore

BUCKET = "rollout"
SIZES = (2_000, 30_000, 120_000, 400_000)

def payload(name, size):
    return random.Random(name).randbytes(size)

def digest(data):
    return hashlib.sha256(data).hexdigest()

def main():
    cluster, mode = sys.argv[1], sys.argv[2]
    out = {"puts": 0, "gets": 0, "failures": [], "mismatches": [], "objects": {}, "degraded": 0, "slowest": 0.0}
    with hcstore.Client(cluster, request_timeout=10.0) as client:
        if mode == "verify":
            objects = json.loads(Path(sys.argv[3]).read_text())["objects"]
            for name, (sha, size) in sorted(objects.items()):
                try:
                    data = client.get(BUCKET, name)
                    out["gets"] += 1
                    if digest(data) != sha or len(data) != size:
                        out["mismatches"].append(name)
                except Exception as exc:
                    out["failures"].append(f"get {name}: {type(exc).__name__}: {exc}")
            print(json.dumps(out))
            return
        stop = Path(sys.argv[3]) if mode == "workload" else None
        count = int(sys.argv[3]) if mode == "put-get" else 10**9
        prefix = sys.argv[4]
        progress = Path(sys.argv[5]) if len(sys.argv) > 5 else None
        rng = random.Random(prefix)
        i = 0
        while i < count and not (stop and stop.exists()):
            name, size = f"{prefix}/{i:05d}", SIZES[i % len(SIZES)]
            data = payload(name, size)
            started = time.monotonic()
            try:
                result = client.put(BUCKET, name, data)
                out["puts"] += 1
                out["degraded"] += bool(result.degraded)
                out["objects"][name] = (digest(data), size)
            except Exception as exc:
                out["failures"].append(f"{time.time():.1f} put {name}: {type(exc).__name__}: {exc}")
            out["slowest"] = max(out["slowest"], time.monotonic() - started)
            if out["objects"]:
                other = rng.choice(sorted(out["objects"]))
                started = time.monotonic()
                try:
                    got = client.get(BUCKET, other)
                    out["gets"] += 1
                    if digest(got) != out["objects"][other][0]:
                        out["mismatches"].append(other)
                except Exception as exc:
                    out["failures"].append(f"{time.time():.1f} get {other}: {type(exc).__name__}: {exc}")
                out["slowest"] = max(out["slowest"], time.monotonic() - started)
            i += 1
            if progress:
                done = {"puts": out["puts"], "gets": out["gets"], "failures": len(out["failures"])}
                progress.write_text(json.dumps(done))
            if stop:
                time.sleep(0.2)
    print(json.dumps(out))

try:
    main()
except Exception:
    traceback.print_exc()
    sys.exit(2)
"""


@dataclass
class Rollout:
    """What the tests of this module share: the fleet, the cluster's credentials, the objects written."""

    fleet: object
    work: Path
    controller: str
    cluster: str
    versions: list[str]
    vars_file: Path
    client_env: dict[str, str]
    objects: dict[str, list] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ running things

    def playbook(self, name: str, *args: str, label: str, timeout: float = 420) -> subprocess.CompletedProcess:
        env = {
            "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.work),
            "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.work / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(self.work / "ansible-tmp"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.work / "cp"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",  # time per task, in the logs
        }
        argv = [str(BIN / "ansible-playbook"), "-i", str(self.fleet.inventory), "-e", f"@{self.vars_file}", *args, name]
        started = time.monotonic()
        result = self.fleet.run(argv, cwd=PLAYBOOKS, env=env, timeout=timeout)
        self.timings[label] = round(time.monotonic() - started, 1)
        (self.work / f"{label}.log").write_text(result.stdout + result.stderr)
        print(f"{label}: {self.timings[label]} s (rc {result.returncode})")
        (self.work / "timings.json").write_text(json.dumps(self.timings, indent=1))
        return result

    def client(self, *args: str, timeout: float = 300) -> dict:
        script = self.work / "client.py"
        result = self.fleet.run([sys.executable, script, self.cluster, *args], env=self.client_env, timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def admin(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """An hcstore admin command on the controller host, with the playbooks' admin key."""
        line = (
            "HCSTORE_KEY=/etc/hcstore/keys/ansible-playbooks.key_secret "
            "HCSTORE_CONTROLLER_KEY=/etc/hcstore/keys/controller.key "
            f"/opt/hcstore/venv/bin/hcstore --cluster {self.cluster} {command}"
        )
        return self.fleet.ssh(self.controller, line, timeout=timeout)

    def status(self) -> dict:
        result = self.admin("status --json")
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def unit(self, host: str, unit: str = "hcstore-agent") -> dict[str, str]:
        result = self.fleet.ssh(
            host, f"systemctl show -p ActiveState,MainPID,ActiveEnterTimestampMonotonic,UnitFileState {unit}"
        )
        return dict(line.split("=", 1) for line in result.stdout.split())

    def venv(self, host: str) -> str:
        return self.fleet.ssh(host, "readlink /opt/hcstore/venv").stdout.strip()

    def versions_running(self) -> dict[str, str]:
        """hcstore_build_info's version of each daemon, read from its metrics endpoint."""
        urls = {f"{host}/agent": f"http://{addr}:7711/metrics" for host, addr in self.fleet.addresses.items()}
        urls["controller"] = f"http://{self.fleet.addresses[self.controller]}:7701/metrics"
        code = (
            "import json, re, sys, urllib.request\n"
            "out = {}\n"
            "for name, url in json.loads(sys.argv[1]).items():\n"
            "    try:\n"
            "        text = urllib.request.urlopen(url, timeout=5).read().decode()\n"
            '        out[name] = re.search(r\'hcstore_build_info\\{[^}]*version="([^"]+)"\', text).group(1)\n'
            "    except Exception as exc:\n"
            "        out[name] = f'unreachable: {exc}'\n"
            "print(json.dumps(out))\n"
        )
        result = self.fleet.run([sys.executable, "-c", code, json.dumps(urls)], timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)


def recap(result: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    return {
        host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
        for host, ok, changed, unreachable, failed in RECAP.findall(result.stdout)
    }


def build_wheel(work: Path, version: str, dest: Path) -> None:
    """A wheel of this tree with the version ``version`` (in pyproject.toml and hcstore.__version__)."""
    tree = work / f"src-{version}"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = ROOT / name
        if source.is_file() and name.split("/", 1)[0] not in ("tests", "playbooks", "benchmarks", "docs", "examples"):
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text(), count=1))
    init = tree / "hcstore" / "__init__.py"
    init.write_text(re.sub(r'(?m)^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text(), count=1))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dest),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert list(dest.glob(f"hcstore-{version}-*.whl")), sorted(p.name for p in dest.iterdir())


@pytest.fixture(scope="module")
def rollout(fleet, tmp_path_factory) -> Rollout:
    work = tmp_path_factory.mktemp("rollout")
    (work / "client.py").write_text(CLIENT)
    # The playbooks install hcstore[isal] (the agents must decode the ISA-L-coded objects that clients
    # with pyeclib write): the wheelhouse needs pyeclib too.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(fleet.wheels), *extras["isal"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next(fleet.wheels.glob("hcstore-*.whl"))
    base = wheel.name.split("-")[1]
    pair = keys.create(work / "keys", "rollout-client")
    controller = fleet.hosts[0]
    cluster = f"tcp://{fleet.addresses[controller]}:7700"
    vars_file = work / "vars.json"
    vars_file.write_text(
        json.dumps(
            {
                "hcstore_version": base,
                "hcstore_ec": EC,
                "hcstore_format_disks": True,
                "hcstore_client_keys": [{"name": "rollout-client", "key": pair.public}],
                "hcstore_protected_timeout": 240,
                "hcstore_maintenance_max_duration": 600,
                "hcstore_drain_timeout": 240,
            }
        )
    )
    client_env = {
        "PATH": "/usr/bin:/bin",
        "HCSTORE_KEY": str(work / "keys" / "rollout-client.key_secret"),
        "HCSTORE_CONTROLLER_KEY": str(work / "controller.key"),
    }
    return Rollout(fleet, work, controller, cluster, [base], vars_file, client_env)


# ---------------------------------------------------------------------- the steps, in order


def test_site_formats_mounts_and_starts_everything(rollout):
    result = rollout.playbook("site.yml", label="site (first run)")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    summary = recap(result)
    assert set(summary) == set(rollout.fleet.hosts), summary
    assert all(host["failed"] == 0 and host["unreachable"] == 0 for host in summary.values()), summary
    for host in rollout.fleet.hosts:
        mounts = rollout.fleet.ssh(
            host,
            "for d in /srv/hcstore/disk0 /srv/hcstore/disk1; do findmnt -n -o FSTYPE,OPTIONS,LABEL $d; done; "
            "grep -c '^UUID=.* /srv/hcstore/disk[01] xfs noatime,' /etc/fstab",
        )
        lines = mounts.stdout.split("\n")
        assert mounts.returncode == 0 and lines[-2] == "2", mounts.stdout + mounts.stderr
        assert all(line.startswith("xfs ") and "noatime" in line and "logbsize=256k" in line for line in lines[:2])
        assert rollout.unit(host)["ActiveState"] == "active"
        assert rollout.unit(host)["UnitFileState"] == "enabled"
    assert rollout.unit(rollout.controller, "hcstore-controller")["ActiveState"] == "active"
    controller_key = rollout.fleet.ssh(rollout.controller, "cat /etc/hcstore/keys/controller.key")
    assert controller_key.returncode == 0
    (rollout.work / "controller.key").write_text(controller_key.stdout)
    status = rollout.status()
    assert status["ec"] == EC
    assert sorted(node["id"] for node in status["nodes"]) == sorted(rollout.fleet.hosts)
    assert all(node["state"] == "alive" for node in status["nodes"]), status["nodes"]


def test_second_site_run_changes_nothing(rollout):
    result = rollout.playbook("site.yml", label="site (second run)")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    summary = recap(result)
    assert set(summary) == set(rollout.fleet.hosts), summary
    changed = {host: counts["changed"] for host, counts in summary.items() if counts["changed"]}
    if changed:  # name the tasks that changed something
        tasks = re.findall(r"^TASK \[(.+?)\].*?\n(?:.*\n)*?changed: \[(\S+)\]", result.stdout, re.M)
        pytest.fail(f"the second run changed {changed}: {tasks}")


def test_a_client_puts_and_reads_through_the_controller(rollout):
    out = rollout.client("put-get", "12", "first")
    assert out["failures"] == [] and out["mismatches"] == [], out
    assert out["puts"] == 12 and out["gets"] == 12
    rollout.objects.update(out["objects"])
    again = rollout.client("verify", _summary(rollout, "first", out))
    assert again["failures"] == [] and again["mismatches"] == [] and again["gets"] == 12


def _summary(rollout: Rollout, name: str, out: dict) -> str:
    path = rollout.work / f"{name}.json"
    path.write_text(json.dumps(out))
    return str(path)


def test_rolling_upgrade_under_load_loses_nothing(rollout):
    new = f"{rollout.versions[0]}.post1"
    build_wheel(rollout.work, new, rollout.fleet.wheels)
    stop, progress = rollout.work / "stop-upgrade-load", rollout.work / "upgrade-load.progress"
    load = subprocess.Popen(
        [
            str(FLEET),
            "exec",
            "--",
            sys.executable,
            str(rollout.work / "client.py"),
            rollout.cluster,
            "workload",
            str(stop),
            "upgrade",
            str(progress),
        ],
        env=rollout.client_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (progress.exists() and json.loads(progress.read_text() or "{}").get("puts", 0) >= 5):
            assert load.poll() is None and time.monotonic() < deadline, "the client load did not start"
            time.sleep(0.5)
        result = rollout.playbook("rolling_upgrade.yml", "-e", f"hcstore_version={new}", label="rolling upgrade")
        time.sleep(3)  # some requests against the fully upgraded cluster too
    finally:
        stop.touch()
        stdout, stderr = load.communicate(timeout=120)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    rollout.versions.append(new)  # what the later steps build on, even when the checks below fail
    assert load.returncode == 0, stdout + stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    rollout.objects.update(out["objects"])
    (rollout.work / "upgrade-load.json").write_text(json.dumps(out, indent=1))
    print(f"load during the upgrade: {out['puts']} puts, {out['gets']} gets, slowest {out['slowest']:.2f} s")
    assert out["failures"] == [], out["failures"]
    assert out["mismatches"] == [], out["mismatches"]
    assert out["puts"] > 20 and out["gets"] > 20, out
    everything = rollout.client("verify", _summary(rollout, "all-after-upgrade", {"objects": rollout.objects}))
    assert everything["failures"] == [] and everything["mismatches"] == [], everything
    protected = rollout.admin("wait protected --timeout 120", timeout=180)
    assert protected.returncode == 0, protected.stdout + protected.stderr
    running = rollout.versions_running()
    assert set(running.values()) == {new}, running
    assert all(rollout.venv(host) == f"venv-{new}" for host in rollout.fleet.hosts)


def test_a_host_that_fails_its_health_check_stops_the_rollout(rollout):
    # A rolling restart (the version every host runs): the hosts that are restarted show it by their pids.
    version = rollout.versions[-1]
    first, failing, after = rollout.fleet.hosts
    before = {host: rollout.unit(host) for host in rollout.fleet.hosts}
    # An invalid setting for that host only, in an inventory of its own (an extra variable would apply to
    # every host): its agent exits at start, and `wait ready --node` times out.
    broken = rollout.work / "broken-host.yml"
    broken.write_text(
        json.dumps({"all": {"hosts": {failing: {"hcstore_agent_settings": {"durability": "bogus"}, **QUICK}}}})
    )
    try:
        result = rollout.playbook(
            "rolling_upgrade.yml",
            "-i",
            str(broken),
            "-e",
            f"hcstore_version={version}",
            label="rolling upgrade (stops at a failing host)",
        )
        nodes = {node["id"]: node for node in rollout.status()["nodes"]}
        units = {host: rollout.unit(host) for host in rollout.fleet.hosts}
        running = rollout.versions_running()
        # Every object is still there: the cluster kept serving with one node down.
        everything = rollout.client("verify", _summary(rollout, "all-after-failure", {"objects": rollout.objects}))
    finally:
        # Fixed (the invalid setting gone), the same playbook brings that host back; the later steps need it.
        fixed = rollout.playbook(
            "rolling_upgrade.yml",
            "--limit",
            failing,
            "-e",
            f"hcstore_version={version}",
            label="rolling upgrade (fixed host)",
        )
    assert result.returncode != 0, result.stdout[-6000:]
    assert f"The upgrade of {failing} to hcstore {version} failed" in result.stdout, result.stdout[-6000:]
    assert "durability='bogus'" in result.stdout, result.stdout[-6000:]  # the agent's own complaint
    assert "Maintenance exit: done" in result.stdout, result.stdout[-6000:]
    summary = recap(result)
    assert summary[failing]["failed"] == 1 and summary[first]["failed"] == 0, summary
    assert nodes[failing]["map_state"] != "maintenance", nodes[failing]
    # The host before it was restarted; the host after it was not touched.
    assert units[first]["MainPID"] != before[first]["MainPID"]
    assert units[after] == before[after]
    assert running[f"{after}/agent"] == running[f"{first}/agent"] == version, running
    assert everything["failures"] == [] and everything["mismatches"] == [], everything
    assert fixed.returncode == 0, fixed.stdout[-8000:] + fixed.stderr[-3000:]
    assert rollout.versions_running()[f"{failing}/agent"] == version


def test_decommission_removes_a_host_with_nothing_lost(rollout):
    host = rollout.fleet.hosts[-1]
    result = rollout.playbook(
        "decommission.yml", "-e", f"hcstore_decommission={host}", "-e", "hcstore_wipe=true", label="decommission"
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    nodes = {node["id"]: node for node in rollout.status()["nodes"]}
    assert host not in nodes or nodes[host]["map_state"] == "decommissioned", nodes
    assert rollout.unit(host)["ActiveState"] == "inactive"
    assert rollout.unit(host)["UnitFileState"] == "disabled"
    disks = rollout.fleet.ssh(
        host,
        "for d in " + " ".join(rollout.fleet.disks[host]) + "; do blkid -p $d; echo rc=$?; done; "
        "grep -c /srv/hcstore /etc/fstab; findmnt /srv/hcstore/disk0; true",
    )
    assert disks.stdout.split().count("rc=2") == 2, disks.stdout  # no signature left on either disk
    assert "\n0\n" in f"\n{disks.stdout}", disks.stdout  # no fstab entry, nothing mounted
    everything = rollout.client("verify", _summary(rollout, "all-after-decommission", {"objects": rollout.objects}))
    assert everything["failures"] == [] and everything["mismatches"] == [], everything
    assert everything["gets"] == len(rollout.objects)
    print("timings:", json.dumps(rollout.timings))
