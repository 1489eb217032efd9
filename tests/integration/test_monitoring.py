"""The alert rules and the dashboard in monitoring/: valid, and firing as their promtool tests say.

``promtool`` comes with Prometheus (``make system-deps`` installs it); without it these tests
fail and say so, rather than pass unchecked. That every metric they name is served by the
daemons is checked against real scrapes in ``test_metrics.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "hcstore-rules.yml"
RULE_TESTS = MONITORING / "hcstore-rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool in monitoring/ (its test file names the rules file relative to itself)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: run `make system-deps` (apt-get install prometheus) to check "
            "monitoring/hcstore-rules.yml",
            pytrace=False,
        )
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=MONITORING, timeout=120, check=False)


def test_the_rules_are_valid():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_the_rules_fire_as_their_tests_expect():
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_rule_has_a_test():
    rules = RULES.read_text()
    tests = RULE_TESTS.read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert alerts
    untested = [name for name in alerts if f"alertname: {name}\n" not in tests]
    assert not untested, f"alerts without a promtool test: {untested}"


def test_the_dashboard_is_a_grafana_dashboard_over_prometheus():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert dashboard["title"] and dashboard["uid"]
    assert len({p["id"] for p in panels}) == len(panels)
    graphs = [p for p in panels if p["type"] != "row"]
    assert graphs and all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in graphs)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in graphs)
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
