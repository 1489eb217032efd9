"""Real power cuts for a local cluster: every agent stands on its own XFS file systems on loop devices.

Each agent gets one file system for its directory (cluster map, ready file, log: the node's
system disk) and one per mountpath (its data SSDs), each a sparse image file attached to a
loop device, formatted with ``mkfs.xfs`` and mounted before the agent first starts.

A power cut is XFS's shutdown ioctl without a log flush, the call ``xfs_io -x -c shutdown``
makes (fstests' shutdown tests use it the same way): whatever XFS had not yet written to the
device, data or log, is gone, as when a rack loses power. The ioctl is issued on every
file system of the cut nodes back to back from this process, after the agents are frozen
with SIGSTOP, so no agent sees one disk gone and another still up; the agents are then
killed (they hold files open), the file systems unmounted and mounted again (the log
replays), and the agents started again.

Image files live under :data:`IMAGE_ROOT`, in a folder named after the process that made
them; a later run detaches and deletes the loop devices, mounts and images that a crashed
run left behind, and touches no loop device whose image is not there.

Needs root, ``losetup``, ``mount``, ``umount``, ``mkfs.xfs`` (xfsprogs) and XFS in the kernel.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from hcstore.cluster.local import LocalCluster

IMAGE_ROOT = Path("/var/tmp/hcstore-power-cut")
IMAGE_BYTES = 320 << 20  # mkfs.xfs refuses file systems under 300 MB; the image stays sparse
XFS_IOC_GOINGDOWN = 0x8004587D  # _IOR('X', 125, __u32)
XFS_FSOP_GOING_FLAGS_NOLOGFLUSH = 2  # drop the in-memory log: ``xfs_io -x -c shutdown`` without -f
TOOLS = ("losetup", "mount", "umount", "mkfs.xfs", "cp")


def missing_requirements() -> str | None:
    """Why real power cuts cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "power-cut tests need root (loop devices, mkfs.xfs, mount); run them as root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"power-cut tests need {', '.join(missing)} on PATH; install them "
            f"(`make system-deps`, or apt-get install -y xfsprogs util-linux mount)"
        )
    if not Path("/dev/loop-control").exists():
        return "power-cut tests need loop devices, and /dev/loop-control is missing (modprobe loop)"
    return None


def in_parallel(work: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """``work`` on every item, on threads (mount, unmount and log replay mostly wait on the kernel)."""
    items = list(items)
    if len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return list(pool.map(work, items))


def _run(*cmd: str) -> str:
    """Run a command; its stdout, or a RuntimeError that carries its stderr."""
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (ticks since boot), None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(folder_name: str) -> bool:
    """True when the process that made an image folder ``<pid>-<start time>-<random>`` still runs."""
    try:
        pid, started, _ = folder_name.split("-", 2)
        return _start_time(int(pid)) == started
    except ValueError:
        return False


def _mounts() -> list[tuple[str, Path]]:
    """``(source, mount point)`` of every mount, in mount order."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            after = fields.index("-")
            mounts.append((fields[after + 2], Path(fields[4].replace("\\040", " "))))
    return mounts


def _loops_backed_by(folder: Path) -> dict[str, str]:
    """Loop devices whose image file lies under ``folder``: device -> image path."""
    listing = json.loads(_run("losetup", "--json", "--list", "--output", "NAME,BACK-FILE") or '{"loopdevices": []}')
    found = {}
    for device in listing.get("loopdevices", []):
        back = (device.get("back-file") or "").removesuffix(" (deleted)")
        if back.startswith(f"{folder}/"):
            found[device["name"]] = back
    return found


def _unmount(mountpoint: Path, *, lazy: bool = False) -> None:
    """Unmount ``mountpoint``, retrying briefly while it is busy; ``lazy`` detaches it if it stays busy."""
    for attempt in range(50):
        done = subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True, text=True)
        if done.returncode == 0:
            return
        if attempt < 49:
            time.sleep(0.1)
    if lazy:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)
        return
    raise RuntimeError(f"cannot unmount {mountpoint}: {done.stderr.strip()}")


def _detach(loop: str) -> None:
    """Detach a loop device (the kernel detaches a busy one when it is last closed)."""
    subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)


def clean_stale() -> list[str]:
    """Unmount, detach and delete what power-cut runs that no longer exist left behind; returns the
    loop devices it detached. Only loop devices whose image lies under :data:`IMAGE_ROOT` are touched."""
    if not IMAGE_ROOT.is_dir():
        return []
    stale = [folder for folder in IMAGE_ROOT.iterdir() if folder.is_dir() and not _owner_alive(folder.name)]
    detached = []
    for folder in stale:
        loops = _loops_backed_by(folder)
        for source, mountpoint in reversed(_mounts()):
            if source in loops:
                _unmount(mountpoint, lazy=True)
        for loop in loops:
            _detach(loop)
            detached.append(loop)
        shutil.rmtree(folder, ignore_errors=True)
    return detached


@dataclass
class Disk:
    """One XFS file system on a loop device, mounted at ``mountpoint``."""

    mountpoint: Path
    image: Path
    loop: str = ""
    mounted: bool = False


class DiskRack:
    """Loop-device XFS file systems made by this process, and the power cuts that hit them.

    Use as a context manager: on exit every file system is unmounted, every loop device
    detached and every image deleted, even after a failure.
    """

    def __init__(self) -> None:
        clean_stale()
        token = f"{os.getpid()}-{_start_time(os.getpid())}-{uuid.uuid4().hex[:8]}"
        self.folder = IMAGE_ROOT / token
        self.folder.mkdir(parents=True)
        self.disks: list[Disk] = []
        self._template: Path | None = None
        self._lock = threading.Lock()  # image numbering, the template, and ``losetup --find``

    def __enter__(self) -> Self:
        """The rack itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Tear everything down (see :meth:`close`)."""
        self.close()

    def _image(self) -> Path:
        """A new sparse image holding an empty XFS file system.

        ``mkfs.xfs`` runs once, and each disk is a sparse copy of that first image (a few
        hundred KiB on the host instead of the 64 MiB log that mkfs zeroes); the copies share
        a file system UUID, so they are mounted with ``nouuid``.
        """
        if self._template is None:
            template = self.folder / "template.img"
            with open(template, "wb") as f:
                f.truncate(IMAGE_BYTES)
            _run("mkfs.xfs", "-f", "-q", "-K", str(template))
            self._template = template
        image = self.folder / f"disk{len(self.disks)}.img"
        _run("cp", "--sparse=always", str(self._template), str(image))
        return image

    def add(self, mountpoint: Path) -> Disk:
        """Make a file system and mount it at ``mountpoint``; whatever the directory held moves onto it.

        Safe to call from several threads at once.
        """
        mountpoint.mkdir(parents=True, exist_ok=True)
        with self._lock:
            disk = Disk(mountpoint, self._image())
            self.disks.append(disk)
            disk.loop = _run("losetup", "--find", "--show", str(disk.image)).strip()
        held = list(mountpoint.iterdir())
        aside = mountpoint.with_name(f".{mountpoint.name}.before-mount")
        if held:
            os.rename(mountpoint, aside)
            mountpoint.mkdir()
        self.mount([disk])
        if held:
            for entry in aside.iterdir():
                shutil.move(str(entry), str(mountpoint / entry.name))
            aside.rmdir()
        return disk

    def mount(self, disks: Iterable[Disk]) -> None:
        """Mount file systems (in the order given: parents first); after a cut XFS replays its log."""
        for disk in disks:
            if not disk.mounted:
                _run("mount", "-t", "xfs", "-o", "nouuid", disk.loop, str(disk.mountpoint))
                disk.mounted = True

    def unmount(self, disks: Iterable[Disk]) -> None:
        """Unmount file systems, children before the parents they are mounted in."""
        for disk in sorted(disks, key=lambda d: len(d.mountpoint.parts), reverse=True):
            if disk.mounted:
                _unmount(disk.mountpoint)
                disk.mounted = False

    def settle(self) -> None:
        """Write everything on every file system to its device (``syncfs``), as on a machine set up
        long before: mount points and moved files must not be what a cut takes."""
        libc = ctypes.CDLL(None, use_errno=True)
        for disk in self.disks:
            fd = os.open(disk.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if libc.syncfs(fd) != 0:
                    raise OSError(ctypes.get_errno(), f"syncfs {disk.mountpoint}")
            finally:
                os.close(fd)

    @staticmethod
    def cut(disks: Iterable[Disk]) -> None:
        """Power cut: shut every file system down at once without flushing its log.

        Every file system is opened first and the ioctls follow back to back, so the cut
        lands on all of them within microseconds.
        """
        fds = [os.open(disk.mountpoint, os.O_RDONLY | os.O_DIRECTORY) for disk in disks]
        try:
            for fd in fds:
                fcntl.ioctl(fd, XFS_IOC_GOINGDOWN, struct.pack("I", XFS_FSOP_GOING_FLAGS_NOLOGFLUSH))
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        """Unmount everything, detach the loop devices and delete the images (idempotent)."""
        for depth in sorted({len(d.mountpoint.parts) for d in self.disks}, reverse=True):
            level = [d for d in self.disks if d.mounted and len(d.mountpoint.parts) == depth]
            in_parallel(lambda disk: _unmount(disk.mountpoint, lazy=True), level)
            for disk in level:
                disk.mounted = False
        for disk in self.disks:
            if disk.loop:
                _detach(disk.loop)
                disk.loop = ""
        self.disks.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def _gone(pid: int, timeout: float = 10.0) -> None:
    """Wait until process ``pid`` has exited (reaping it when it is a child of this process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        return
            except OSError:
                return
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} did not exit within {timeout}s of SIGKILL")


def _signal(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; a process already gone is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class PoweredCluster:
    """A :class:`LocalCluster` whose agents each stand on their own XFS disks, with power cuts."""

    cluster: LocalCluster
    rack: DiskRack
    disks: dict[str, list[Disk]] = field(default_factory=dict)
    pids: dict[str, tuple[int, str]] = field(default_factory=dict)  # node -> (pid, start time) of its agent

    def __getattr__(self, name: str) -> Any:
        """Everything else is the :class:`LocalCluster`'s (``agents``, ``client``, ``running``...)."""
        return getattr(self.cluster, name)

    def _nodes(self, nodes: Iterable[str] | None) -> list[str]:
        """``nodes`` as a list, or every node of the cluster."""
        return list(nodes) if nodes is not None else list(self.disks)  # no config read from a cut disk

    def _remember_pids(self, nodes: list[str]) -> None:
        """Note the processes of ``nodes``, just started, with their start times (pids get reused)."""
        for node in nodes:
            pid = self.cluster.agent(node).pid()
            started = _start_time(pid) if pid is not None else None
            if pid is not None and started is not None:
                self.pids[node] = (pid, started)

    def _ours(self, node: str) -> int | None:
        """The pid of ``node``'s agent if that process, started by this cluster, still runs."""
        pid, started = self.pids.get(node, (0, None))
        return pid if pid and _start_time(pid) == started else None

    def start(self, nodes: Iterable[str] | None = None) -> None:
        """Start the controller and the agents (all, or ``nodes``) and wait until each serves."""
        targets = self._nodes(nodes)
        try:
            if nodes is None:
                self.cluster.start()
            else:
                for node in targets:
                    self.cluster.start(node)
        finally:
            self._remember_pids(targets)

    def power_cut(self, nodes: Iterable[str] | None = None) -> None:
        """Cut the power of ``nodes`` (default: all) at once: processes and unwritten state both gone.

        The agents are frozen (SIGSTOP) so that none runs on with some of its disks gone, every
        file system of theirs is shut down without a log flush, then the agents are SIGKILLed.
        """
        nodes = self._nodes(nodes)
        pids = [pid for pid in map(self._ours, nodes) if pid is not None]
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        self.rack.cut(disk for node in nodes for disk in self.disks[node])
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        for pid in pids:
            _gone(pid)
        for node in nodes:
            self.pids.pop(node, None)

    def power_on(self, nodes: Iterable[str] | None = None) -> None:
        """Bring cut nodes back: unmount, mount again (XFS replays its log), start their agents."""
        nodes = self._nodes(nodes)

        def remount(node: str) -> None:
            self.rack.unmount(self.disks[node])
            self.rack.mount(self.disks[node])

        in_parallel(remount, nodes)
        self.start(nodes)

    def kill_all(self) -> None:
        """SIGKILL every agent process this cluster started that still runs."""
        pids = [pid for pid in map(self._ours, list(self.pids)) if pid is not None]
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        for pid in pids:
            _gone(pid)
        self.pids.clear()


@contextmanager
def powered_cluster(path: Path, **options: Any) -> Iterator[PoweredCluster]:
    """A started local cluster on loop-device XFS disks; torn down on exit even after a failure.

    Takes :meth:`LocalCluster.create`'s options. The cluster is created, a file system is
    mounted over each agent's directory and then over each of its mountpaths, and the
    cluster is started.
    """
    cluster = LocalCluster.create(path, **options)
    rack = DiskRack()
    powered = PoweredCluster(cluster, rack)
    try:

        def mount(agent: Any) -> None:
            powered.disks[agent.node_id] = [rack.add(agent.directory)] + [rack.add(mp) for mp in agent.mountpaths]

        in_parallel(mount, cluster.agents())
        rack.settle()
        powered.start()
        yield powered
    finally:
        try:
            powered.kill_all()
        finally:
            try:
                rack.close()
            finally:
                cluster.destroy()
