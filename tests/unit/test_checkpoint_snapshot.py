"""HostSnapshot: copies of a state dict into host buffers allocated once per layout, on the CPU."""

from __future__ import annotations

import collections

import pytest
import torch

from hcstore.checkpoints.snapshot import HostSnapshot, layout_of


def _state() -> dict:
    model = collections.OrderedDict(w=torch.arange(12.0).reshape(3, 4), b=torch.ones(4, dtype=torch.float16))
    model._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    rng = [torch.tensor([1, 2], dtype=torch.uint8)]
    return {"model": model, "optim": {"step": 3, "betas": (0.9, 0.99)}, "rng": rng}


def test_the_copy_is_equal_detached_and_keeps_containers():
    state = _state()
    copied = HostSnapshot(pin_memory=False).copy(state)
    assert isinstance(copied["model"], collections.OrderedDict) and copied["model"]._metadata == {"": {"version": 1}}
    assert copied["optim"] == {"step": 3, "betas": (0.9, 0.99)} and isinstance(copied["rng"], list)
    state["model"]["w"].add_(1)
    state["model"]._metadata[""]["version"] = 2
    assert torch.equal(copied["model"]["w"], torch.arange(12.0).reshape(3, 4))
    assert copied["model"]["b"].dtype == torch.float16 and copied["model"]._metadata[""]["version"] == 1


def test_buffers_are_reused_for_the_same_layout_and_replaced_for_another():
    snapshot = HostSnapshot(pin_memory=False)
    first = snapshot.copy(_state())
    second = snapshot.copy(_state())
    assert second["model"]["w"].data_ptr() == first["model"]["w"].data_ptr()
    assert snapshot.nbytes == 12 * 4 + 4 * 2 + 2
    other = _state()
    other["model"]["w"] = torch.zeros(5, 4)
    assert layout_of(other) != layout_of(_state())
    snapshot.copy(other)
    assert snapshot.nbytes == 20 * 4 + 4 * 2 + 2  # one set of buffers, never more


def test_a_non_contiguous_tensor_is_copied_by_value_and_sparse_is_refused():
    view = torch.arange(16.0).reshape(4, 4).t()
    copied = HostSnapshot(pin_memory=False).copy({"t": view})
    assert torch.equal(copied["t"], view)
    with pytest.raises(TypeError, match="only dense tensors"):
        HostSnapshot(pin_memory=False).copy({"s": torch.eye(3).to_sparse()})
