"""Static checks of the Ansible playbooks in playbooks/: lint, syntax, rendered units and configs.

Fast (no hosts): ansible-lint with the repository's settings, ``ansible-playbook --syntax-check``
of each playbook, the systemd units rendered with Ansible's template machinery and the playbooks'
own variables checked by ``systemd-analyze verify``, the config templates rendered and loaded by
hcstore's config classes, and every variable the playbooks use documented.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hcstore.config import AgentConfig, ControllerConfig

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
BIN = Path(sys.executable).parent
PLAYS = ["site.yml", "rolling_upgrade.yml", "decommission.yml", "ray.yml"]
DISKS = ["/dev/disk/by-id/nvme-TEST_SERIAL_0", "/dev/disk/by-id/nvme-TEST_SERIAL_1"]


def ansible_env(tmp_path: Path) -> dict[str, str]:
    """The environment for Ansible tools: this venv's binaries first, state under tmp_path."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_HOME"] = str(tmp_path / "ansible-home")
    env["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["NO_COLOR"] = "1"
    return env


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: pip install -e '.[test]'"
    return str(path)


def run(argv: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=PLAYBOOKS,
        env=ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_ansible_lint_passes(tmp_path):
    result = run([tool("ansible-lint"), "--offline", "--format=pep8", "--nocolor"], tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]


@pytest.mark.parametrize("playbook", PLAYS)
def test_syntax_check(playbook, tmp_path):
    result = run(
        [tool("ansible-playbook"), "-i", "inventory.example.yml", "--syntax-check", playbook], tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def render(tmp_path: Path, src: str, dest: Path, extra: dict) -> str:
    """Render a template of the playbooks with Ansible, the playbooks' variables and ``extra``."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        json.dumps({"all": {"children": {"hcstore_controller": {"hosts": {"localhost": {}}}, "hcstore_agents": {}}}})
    )
    argv = [
        tool("ansible"),
        "localhost",
        "-i",
        str(inventory),
        "-c",
        "local",
        "-m",
        "ansible.builtin.template",
        "-a",
        f"src={PLAYBOOKS / src} dest={dest}",
        "-e",
        "@group_vars/all.yml",
        "-e",
        "@roles/agent/vars/main.yml",
        "-e",
        "@roles/controller/vars/main.yml",
        "-e",
        json.dumps({"ansible_python_interpreter": sys.executable}),
        "-e",
        json.dumps(extra),
    ]
    result = run(argv, tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return dest.read_text()


@pytest.fixture
def fake_install(tmp_path) -> Path:
    """An install root whose venv/bin/hcstore exists and is executable (verify checks ExecStart)."""
    root = tmp_path / "opt-hcstore"
    binary = root / "venv" / "bin" / "hcstore"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return root


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["agent", "controller"])
def test_units_pass_systemd_analyze_verify(unit, tmp_path, fake_install):
    dest = tmp_path / f"hcstore-{unit}.service"
    text = render(
        tmp_path,
        f"roles/{unit}/templates/hcstore-{unit}.service.j2",
        dest,
        {"hcstore_install_root": str(fake_install), "hcstore_disks": DISKS, "ansible_host": "10.0.0.11"},
    )
    assert f"ExecStart={fake_install}/venv/bin/hcstore {unit} --config /etc/hcstore/{unit}.toml" in text
    assert "Restart=on-failure" in text
    assert "LimitNOFILE=20000" in text
    assert "After=network-online.target" in text
    if unit == "agent":
        assert "RequiresMountsFor=/srv/hcstore/disk0 /srv/hcstore/disk1" in text
    result = subprocess.run(
        ["systemd-analyze", "verify", str(dest)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    # verify exits 0 on a unit it only warns about (an unknown key, a bad value): any output is a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.parametrize("daemon", ["agent", "controller"])
def test_configs_load_as_hcstore_configs(daemon, tmp_path):
    dest = tmp_path / f"{daemon}.toml"
    render(
        tmp_path,
        "templates/settings.toml.j2",
        dest,
        {
            "hcstore_settings_title": daemon,
            "hcstore_settings": f"{{{{ hcstore_{daemon}_config }}}}",
            "hcstore_disks": DISKS,
            "ansible_host": "10.0.0.11",
            "hcstore_labels": {"rack": "r1", "zone": "a"},
            "hcstore_agent_settings": {"repair_rate": 1e8, "weight": 2},
            "hcstore_controller_settings": {"out_after": 600},
        },
    )
    if daemon == "agent":
        config = AgentConfig.load(dest, environ={})
        assert config.node_id == "localhost"
        assert config.mountpaths == ("/srv/hcstore/disk0", "/srv/hcstore/disk1")
        assert (config.host, config.port, config.metrics_port) == ("10.0.0.11", 7710, 7711)
        assert config.controller == "tcp://10.0.0.11:7700"
        assert config.key == "/etc/hcstore/keys/node.key_secret"
        assert config.labels == (("rack", "r1"), ("zone", "a"))
        assert (config.repair_rate, config.weight) == (1e8, 2.0)
    else:
        config = ControllerConfig.load(dest, environ={})
        assert (config.host, config.port, config.ec) == ("10.0.0.11", 7700, "4+2")
        assert config.keys_file == "/var/lib/hcstore/controller/allow.json"
        assert config.out_after == 600


def used_variables() -> set[str]:
    names: set[str] = set()
    for path in PLAYBOOKS.rglob("*"):
        if path.suffix in (".yml", ".j2") and "tests" not in path.relative_to(PLAYBOOKS).parts:
            names |= set(re.findall(r"\bhcstore_[a-z0-9_]+\b", path.read_text()))
    # Registered results, facts and task or play vars (indented keys), and the settings built in role vars.
    internal = set()
    for path in PLAYBOOKS.rglob("*.yml"):
        if path.name.startswith("inventory") or "tests" in path.relative_to(PLAYBOOKS).parts:
            continue
        text = path.read_text()
        internal |= set(re.findall(r"(?:register|loop_var):\s*(hcstore_[a-z0-9_]+)", text))
        internal |= set(re.findall(r"^\s+(hcstore_[a-z0-9_]+):", text, re.M)) - set(
            re.findall(r"^(hcstore_[a-z0-9_]+):", (PLAYBOOKS / "group_vars/all.yml").read_text(), re.M)
        )
    for path in (PLAYBOOKS / "roles").glob("*/vars/main.yml"):
        internal |= set(yaml.safe_load(path.read_text()))
    groups = {"hcstore", "hcstore_controller", "hcstore_agents"}
    return names - internal - groups


def test_every_variable_is_in_group_vars_and_the_readme():
    defaults = (PLAYBOOKS / "group_vars/all.yml").read_text()
    readme = (PLAYBOOKS / "README.md").read_text()
    names = used_variables()
    assert {"hcstore_version", "hcstore_package_url", "hcstore_disks", "hcstore_format_disks"} <= names
    undocumented = sorted(n for n in names if n not in defaults or f"`{n}`" not in readme)
    assert not undocumented, f"not in group_vars/all.yml or README.md: {undocumented}"
