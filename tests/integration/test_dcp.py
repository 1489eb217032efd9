"""torch.distributed.checkpoint (FsspecWriter / FsspecReader) on hcstore:// against a real local cluster.

Single process, no process group: ``dcp.save``/``dcp.load`` then say so in a
warning and write one rank's files. Every tensor must come back bit-identical.
"""

from __future__ import annotations

import uuid
import warnings

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter  # not exported in 2.13

from hcstore.checkpoints import CheckpointManager, dcp_reader, dcp_writer

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _url() -> str:
    return f"hcstore://dcp/run-{uuid.uuid4().hex[:10]}/step-1"


@pytest.fixture(scope="module")
def options(shared_cluster) -> dict[str, str]:
    return {"cluster": str(shared_cluster.path)}


def _state_dict(seed: int) -> dict:
    """Tensors of many dtypes and shapes (NaN and inf included), nested, plus plain values."""
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-40])
    return {
        "model": {
            "embed.weight": torch.randn(1000, 64, generator=g),  # 256 KB float32
            "fc.weight": torch.randn(128, 96, generator=g, dtype=torch.float64),
            "fc.bias": torch.cat([torch.randn(27, generator=g), special]),
            "half": torch.randn(33, 7, generator=g).half(),
            "bf16": torch.randn(300, generator=g).bfloat16(),
            "int8": torch.randint(-128, 127, (513,), generator=g, dtype=torch.int8),
            "uint8": torch.randint(0, 255, (4, 4, 4), generator=g, dtype=torch.uint8),
            "int64": torch.randint(-(2**62), 2**62, (17,), generator=g, dtype=torch.int64),
            "mask": torch.randint(0, 2, (99,), generator=g).bool(),
            "complex": torch.randn(8, generator=g, dtype=torch.complex64),
            "scalar": torch.tensor(3.5),
            "empty": torch.empty(0, 5),
        },
        "optim": {"step": 1234, "lr": 3e-4, "betas": [0.9, 0.999], "name": "adamw"},
    }


def _zeros_like(state: dict) -> dict:
    return {
        k: _zeros_like(v) if isinstance(v, dict) else torch.zeros_like(v) if isinstance(v, torch.Tensor) else None
        for k, v in state.items()
    }


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def _assert_identical(loaded: dict, expected: dict) -> None:
    for name, value in expected.items():
        if isinstance(value, dict):
            _assert_identical(loaded[name], value)
        elif isinstance(value, torch.Tensor):
            got = loaded[name]
            assert got.dtype == value.dtype and got.shape == value.shape, name
            assert _bits(got) == _bits(value), f"{name} differs"
            assert value.isnan().any() or torch.equal(got, value), name
        else:
            assert loaded[name] == value, name


def _save_and_load(url: str, options: dict, state: dict, **writer_options) -> dict:
    dcp.save(state, storage_writer=FsspecWriter(url, sync_files=False, **writer_options, **options))
    target = _zeros_like(state)
    dcp.load(target, storage_reader=FsspecReader(url, **options))
    return target


def test_round_trip_is_bit_identical(options):
    state = _state_dict(1)
    _assert_identical(_save_and_load(_url(), options, state), state)


def test_helpers_default_to_sync_files_off(options):
    state = _state_dict(7)
    url = _url()
    writer = dcp_writer(url, **options)
    assert writer.sync_files is False
    dcp.save(state, storage_writer=writer)
    target = _zeros_like(state)
    dcp.load(target, storage_reader=dcp_reader(url, **options))
    _assert_identical(target, state)


def test_one_file_per_tensor_with_two_writer_threads(options):
    state = _state_dict(2)
    url = _url()
    loaded = _save_and_load(url, options, state, single_file_per_rank=False, thread_count=2)
    _assert_identical(loaded, state)
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url, **options)
    assert len([p for p in fs.ls(path, detail=False) if p.endswith(".distcp")]) > 2


@pytest.mark.filterwarnings("ignore:Detected an existing checkpoint")
def test_saving_again_to_the_same_path_replaces_it(options):
    url = _url()
    _save_and_load(url, options, _state_dict(3))
    newer = _state_dict(4)
    _assert_identical(_save_and_load(url, options, newer), newer)


def test_through_the_checkpoint_manager(options):
    state = _state_dict(5)
    with CheckpointManager(f"hcstore://dcp/mgr-{uuid.uuid4().hex[:10]}", keep_last=2, storage_options=options) as mgr:
        for step in (1, 2, 3):
            with mgr.saving(step) as ckpt:
                dcp.save(state, storage_writer=ckpt.dcp_writer())
        checkpoint = mgr.latest()
        assert checkpoint.step == 3 and [c.step for c in mgr.list()] == [2, 3]
        assert ".metadata" in {f.name for f in checkpoint.files}
        target = _zeros_like(state)
        dcp.load(target, storage_reader=checkpoint.dcp_reader())
    _assert_identical(target, state)


def test_async_save_round_trip_while_the_state_changes(options):
    state = _state_dict(8)
    expected = _state_dict(8)
    url = _url()
    saved = dcp.async_save(state, storage_writer=dcp_writer(url, **options))  # staged into host memory
    with torch.no_grad():
        state["model"]["embed.weight"].add_(1.0)  # training goes on while the upload runs
        state["model"]["int64"].zero_()
    saved.result(timeout=30)
    target = _zeros_like(expected)
    dcp.load(target, storage_reader=dcp_reader(url, **options))
    _assert_identical(target, expected)


def test_load_with_m_agents_killed(make_cluster):
    cluster = make_cluster(agents=6, ec="4+2")
    options = {"cluster": str(cluster.path)}
    state = _state_dict(6)
    url = _url()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=FsspecWriter(url, sync_files=False, **options))
    cluster.kill("n2")
    cluster.kill("n5")
    target = _zeros_like(state)
    dcp.load(target, storage_reader=FsspecReader(url, **options))
    _assert_identical(target, state)
