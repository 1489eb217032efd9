"""CheckpointManager on hcstore:// against a real local cluster.

Retention, restore, the crash guarantee (a save SIGKILLed before its manifest
never becomes the newest checkpoint), asynchronous saves (the state may change
as soon as ``save_async`` returns; a failed background save is raised and never
complete), background durable copies to file://, and restore with ``m`` agents
SIGKILLed.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import torch
from fsspec.implementations.local import LocalFileSystem

from hcstore.checkpoints import (
    MANIFEST_NAME,
    BackgroundSaveFailed,
    CheckpointCorrupt,
    CheckpointManager,
    CheckpointNotFound,
    DurableCopyFailed,
    checkpoint_dirname,
)
from hcstore.errors import InvalidRequest

REPO = Path(__file__).resolve().parents[2]


def _new_root() -> str:
    return f"hcstore://ckpt/run-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def options(shared_cluster) -> dict[str, str]:
    return {"cluster": str(shared_cluster.path)}


@pytest.fixture
def manager(options):
    """A manager on a fresh root of the shared cluster, keeping the last 2 checkpoints."""
    with CheckpointManager(_new_root(), keep_last=2, storage_options=options) as mgr:
        yield mgr


def _state(step: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return {"w": torch.randn(256, 64, generator=generator), "step": torch.tensor(step)}


def _save_step(mgr: CheckpointManager, step: int):
    return mgr.save(step, {"model.pt": lambda f: torch.save(_state(step), f), "meta/step.txt": str(step).encode()})


def _load_model(checkpoint) -> dict[str, torch.Tensor]:
    with checkpoint.open("model.pt") as f:
        return torch.load(io.BytesIO(f.read()))


def _dirs(mgr: CheckpointManager) -> list[str]:
    mgr.fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[-1] for p in mgr.fs.ls(mgr.url, detail=False))


# ---------------------------------------------------------------------- retention and restore


def test_keeps_last_n_and_restores_the_newest(manager):
    for step in (10, 20, 30, 40):
        _save_step(manager, step)
    assert [c.step for c in manager.list()] == [30, 40]
    assert _dirs(manager) == [checkpoint_dirname(30), checkpoint_dirname(40)]
    newest = manager.restore()
    assert newest.step == 40 and newest.url.startswith("hcstore://ckpt/")
    assert torch.equal(_load_model(newest)["w"], _state(40)["w"])
    assert torch.equal(_load_model(manager.restore(30))["w"], _state(30)["w"])
    with pytest.raises(CheckpointNotFound, match="step 10"):
        manager.restore(10)


def test_manifest_lists_every_file_with_size_and_digest(manager):
    checkpoint = _save_step(manager, 1)
    names = {f.name: f for f in checkpoint.files}
    assert set(names) == {"model.pt", "meta/step.txt"}
    assert names["meta/step.txt"].size == 1
    assert all(len(f.blake3) == 64 for f in checkpoint.files)
    assert manager.fs.exists(f"{checkpoint.path}/{MANIFEST_NAME}")


def test_a_checkpoint_pickles_for_another_process(manager):
    checkpoint = _save_step(manager, 2)
    copy = pickle.loads(pickle.dumps(checkpoint))  # e.g. handed to a Ray task that restores
    assert copy == checkpoint
    assert torch.equal(_load_model(copy)["w"], _state(2)["w"])


def test_download_verifies_and_catches_a_changed_file(manager, tmp_path):
    checkpoint = _save_step(manager, 5)
    local = manager.download(tmp_path / "good")
    assert torch.equal(torch.load(local / "model.pt")["w"], _state(5)["w"])
    assert (local / "meta" / "step.txt").read_bytes() == b"5"
    manager.fs.pipe_file(f"{checkpoint.path}/meta/step.txt", b"6")  # same size, other bytes
    with pytest.raises(CheckpointCorrupt, match="step.txt: blake3"):
        manager.download(tmp_path / "bad")
    assert not (tmp_path / "bad" / "meta" / "step.txt").exists()


def test_an_exception_inside_saving_makes_nothing_visible(manager):
    _save_step(manager, 1)
    with pytest.raises(RuntimeError, match="training blew up"):
        with manager.saving(2) as ckpt:
            ckpt.write("model.pt", b"partial")
            raise RuntimeError("training blew up")
    assert manager.latest().step == 1
    _save_step(manager, 3)
    assert [c.step for c in manager.list()] == [1, 3]
    assert checkpoint_dirname(2) not in _dirs(manager)  # the leftover is older than 3: garbage


def test_upload_dir_and_bad_arguments(manager, tmp_path):
    (tmp_path / "hf" / "sub").mkdir(parents=True)
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "hf" / "sub" / "weights.bin").write_bytes(b"\1" * 1000)
    with manager.saving(7) as ckpt:
        ckpt.upload_dir(tmp_path / "hf")
    assert sorted(f.name for f in manager.latest().files) == ["config.json", "sub/weights.bin"]
    with pytest.raises(InvalidRequest, match="keep_last=0"):
        CheckpointManager(manager.url, keep_last=0)
    with pytest.raises(InvalidRequest, match="'../x'"):
        with manager.saving(8) as ckpt:
            ckpt.write("../x", b"")
    with pytest.raises(InvalidRequest, match="no durable_url"):
        manager.save(9, {"a": b"1"}, durable=True)


# ---------------------------------------------------------------------- the crash guarantee

_KILLED_SAVE = """
import sys, time
from hcstore.checkpoints import CheckpointManager

mgr = CheckpointManager(sys.argv[1], storage_options={"cluster": sys.argv[2]})
with mgr.saving(int(sys.argv[3])) as ckpt:
    ckpt.write("model.pt", b"m" * 300_000)          # closed: committed, but no manifest yet
    ckpt.write("optim.pt", b"o" * 1_000)
    half = ckpt.open("big.pt")                       # open: killed in the middle of a file
    half.write(b"b" * 200_000)
    print("files written", flush=True)
    time.sleep(120)
"""


def test_a_save_killed_before_its_manifest_never_becomes_the_newest(options):
    root = _new_root()
    with CheckpointManager(root, keep_last=3, storage_options=options) as mgr:
        _save_step(mgr, 1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, root, options["cluster"], "2"], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "files written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()

    with CheckpointManager(root, keep_last=3, storage_options=options) as mgr:
        leftover = f"{mgr.fs._strip_protocol(root)}/{checkpoint_dirname(2)}"
        assert mgr.fs.exists(f"{leftover}/model.pt")  # the killed save did write files ...
        assert mgr.latest().step == 1  # ... but never became a checkpoint
        assert [c.step for c in mgr.list()] == [1]
        _save_step(mgr, 3)
        assert [c.step for c in mgr.list()] == [1, 3]
        assert checkpoint_dirname(2) not in _dirs(mgr)  # the new manager removed the leftover


# ---------------------------------------------------------------------- asynchronous saves


def _training_state(seed: int) -> dict:
    """A model and optimizer state as a training loop holds it: nested, tensors and plain values."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "model": torch.nn.Linear(512, 512).state_dict(),  # an OrderedDict with _metadata
        "optimizer": {"state": {0: {"exp_avg": torch.randn(256, 1024, generator=generator)}}, "lr": 3e-4},
        "rng": [torch.randint(0, 255, (64,), generator=generator, dtype=torch.uint8), 7],
    }


def _assert_same(loaded, expected) -> None:
    if isinstance(expected, torch.Tensor):
        assert loaded.dtype == expected.dtype and torch.equal(loaded, expected)
    elif isinstance(expected, dict):
        assert loaded.keys() == expected.keys()
        for key, value in expected.items():
            _assert_same(loaded[key], value)
    elif isinstance(expected, (list, tuple)):
        assert type(loaded) is type(expected) and len(loaded) == len(expected)
        for got, value in zip(loaded, expected, strict=True):
            _assert_same(got, value)
    else:
        assert loaded == expected


def test_save_async_round_trip_while_training_changes_the_state(manager):
    state = _training_state(1)
    expected = copy.deepcopy(state)
    saved = manager.save_async(1, state, files={"trainer.json": b'{"epoch": 1}'})
    with torch.no_grad():  # the next training step, at once: the checkpoint must not see it
        state["model"]["weight"].add_(1.0)
        state["optimizer"]["state"][0]["exp_avg"].zero_()
        state["rng"][0].fill_(3)
    checkpoint = saved.result(timeout=30)
    assert checkpoint.step == 1 and manager.latest() == checkpoint
    assert {f.name for f in checkpoint.files} == {"model.pt", "trainer.json"}
    loaded = _load_model(checkpoint)
    _assert_same(loaded, expected)
    assert loaded["model"]._metadata == expected["model"]._metadata

    buffers = manager._snapshot._buffers
    second = manager.save_async(2, state)  # waits for nothing: the first is settled
    manager.wait(timeout=30)
    assert manager._snapshot._buffers is buffers  # same layout: the host buffers are reused
    _assert_same(_load_model(second.result()), state)
    assert [c.step for c in manager.list()] == [1, 2]


def test_a_failed_background_save_is_raised_and_never_complete(make_cluster):
    cluster = make_cluster(agents=3, ec="2+1")
    state = {"w": torch.randn(64, 1024)}
    mgr = CheckpointManager(_new_root(), storage_options={"cluster": str(cluster.path), "request_timeout": 2.0})
    mgr.save_async(1, state).result(timeout=30)
    cluster.kill("n1")  # 2 of 3 agents left: reads decode, a 2+1 write misses its quorum of 3
    failing = mgr.save_async(2, state)  # returns: the copy is local
    with pytest.raises(BackgroundSaveFailed, match="background save of checkpoint 2 .* failed") as failure:
        mgr.wait(timeout=60)
    assert failure.value.step == 2 and failure.value.__cause__ is not None
    assert failing.exception() is failure.value
    mgr.wait()  # raised once
    mgr.save_async(3, state)
    with pytest.raises(BackgroundSaveFailed, match="checkpoint 3"):  # the next save raises it first
        mgr.save_async(4, state)
    assert mgr.latest().step == 1  # 2 and 3 wrote no manifest
    mgr.close()


# ---------------------------------------------------------------------- durable copies


class GatedLocalFileSystem(LocalFileSystem):
    """A local filesystem whose writes wait for ``gate`` (a durable backend that is slow on demand)."""

    cachable = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.fail = False

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            if self.fail:
                raise PermissionError(f"durable store refuses {path}")
            assert self.gate.wait(20), "the test never opened the gate"
        return super()._open(path, mode, **kwargs)


def test_durable_copies_run_in_the_background_and_protect_their_source(options, tmp_path):
    durable = GatedLocalFileSystem(auto_mkdir=True)
    mgr = CheckpointManager(
        _new_root(),
        keep_last=1,
        durable_url=(durable, str(tmp_path / "durable")),
        durable_every=2,
        storage_options=options,
    )
    try:
        for step in (1, 2, 3, 4):
            _save_step(mgr, step)  # returns although the durable store blocks every write
        assert not (tmp_path / "durable" / checkpoint_dirname(2) / MANIFEST_NAME).exists()
        # keep_last=1, yet 2 stays while its copy is in flight, and 4 (queued) stays as the newest
        assert [c.step for c in mgr.list()] == [2, 4]
        durable.gate.set()
        mgr.wait(timeout=30)
        assert [c.step for c in mgr.list()] == [4]  # 2 goes once its copy is done
    finally:
        durable.gate.set()
        mgr.close()
    copies = CheckpointManager(f"file://{tmp_path / 'durable'}", keep_last=None)
    assert [c.step for c in copies.list()] == [2, 4]
    assert torch.equal(_load_model(copies.restore(4))["w"], _state(4)["w"])
    assert all(f.blake3 for f in copies.restore(2).files)


def test_a_failed_durable_copy_is_raised_by_wait_and_kept(options, tmp_path):
    durable = GatedLocalFileSystem(auto_mkdir=True)
    durable.fail = True
    mgr = CheckpointManager(
        _new_root(), keep_last=2, durable_url=(durable, str(tmp_path / "durable")), storage_options=options
    )
    _save_step(mgr, 1)  # training is not interrupted by the failure
    with pytest.raises(DurableCopyFailed, match="checkpoint\\(s\\) 1") as failure:
        mgr.wait(timeout=30)
    assert failure.value.failures[0][0] == 1
    assert isinstance(failure.value.__cause__, PermissionError)
    assert [step for step, _ in mgr.durable_errors] == [1]
    assert mgr.latest().step == 1
    mgr.wait()  # reported once
    mgr.close()
    assert not list((tmp_path / "durable").glob(f"*/{MANIFEST_NAME}"))


# ---------------------------------------------------------------------- degraded restore


def test_restore_after_sigkill_of_m_agents(make_cluster, tmp_path):
    cluster = make_cluster(agents=6, ec="4+2")
    root = _new_root()
    state = {"big": torch.randn(512, 1024), "small": torch.arange(100), "half": torch.randn(64).half()}
    with CheckpointManager(root, storage_options={"cluster": str(cluster.path)}) as mgr:
        mgr.save(100, {"model.pt": lambda f: torch.save(state, f), "config.json": b'{"lr": 0.1}'})
    cluster.kill("n1")
    cluster.kill("n4")
    with CheckpointManager(root, storage_options={"cluster": str(cluster.path)}) as mgr:
        checkpoint = mgr.restore()
        assert checkpoint.step == 100
        local = checkpoint.download(tmp_path / "restored")  # verified against the blake3 digests
    loaded = torch.load(local / "model.pt")
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state.items())
    assert (local / "config.json").read_bytes() == b'{"lr": 0.1}'
