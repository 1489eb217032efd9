"""Smoke test of the local fleet: Ansible reaches every host, disks mount by UUID, wheels install."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ANSIBLE = Path(sys.executable).parent / "ansible"

DISK_CHECK = """set -eu
d={disk}
mkfs.xfs -q -f "$d"
u=$(blkid -o value -s UUID "$d")
test -n "$u"
m=$(mktemp -d)
mount UUID="$u" "$m"
findmnt -n -o FSTYPE "$m"
umount "$m"
printf 'UUID=%s %s xfs noatime 0 0\\n' "$u" "$m" > "$m.fstab"
mount --fstab "$m.fstab" -a
findmnt -n -o FSTYPE,OPTIONS "$m"
umount "$m"
rm -f "$m.fstab"
rmdir "$m"
wipefs -q -a "$d"
"""


def test_ansible_pings_every_host(fleet):
    if not ANSIBLE.exists():
        pytest.fail(f"{ANSIBLE} not found: install ansible-core into the test environment", pytrace=False)
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "False"}
    ping = fleet.run([ANSIBLE, "-i", fleet.inventory, "all", "-m", "ping"], env=env, timeout=120)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    for host in fleet.hosts:
        assert f"{host} | SUCCESS" in ping.stdout


def test_each_host_mounts_a_disk_by_uuid(fleet):
    def check(host):
        return fleet.ssh(host, DISK_CHECK.format(disk=fleet.disks[host][0]), timeout=60)

    with ThreadPoolExecutor(len(fleet.hosts)) as pool:
        results = dict(zip(fleet.hosts, pool.map(check, fleet.hosts), strict=True))
    for host, result in results.items():
        assert result.returncode == 0, f"{host}: {result.stdout}{result.stderr}"
        assert result.stdout.split()[:1] == ["xfs"], result.stdout
        assert "noatime" in result.stdout


def test_hcstore_installs_from_the_served_wheels(fleet):
    host = fleet.hosts[0]
    script = (
        "set -eu; rm -rf /tmp/hcstore-smoke; python3 -m venv /tmp/hcstore-smoke; "
        f"/tmp/hcstore-smoke/bin/pip install -q --no-compile --no-index --find-links {fleet.package_url} hcstore; "
        "/tmp/hcstore-smoke/bin/hcstore --help; rm -rf /tmp/hcstore-smoke"
    )
    result = fleet.ssh(host, script, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage: hcstore" in result.stdout
