"""Copies of a state dict into host buffers that are allocated once and reused by every later copy.

An asynchronous save must let training go on while the bytes are persisted, so it first
copies the state into memory that training does not touch: a :class:`HostSnapshot`. The
buffers are allocated for one *layout* (the tree of the state dict, with the shape and
dtype of every tensor) and reused for as long as the layout stays the same, so a save
costs one ``copy_`` per tensor and no allocation; a new layout replaces them (one set of
buffers is kept, never more). When CUDA is available the buffers are pinned, GPU tensors
are copied with ``non_blocking=True``, and each device involved is synchronized once at
the end.

Containers (dicts, lists, tuples) are rebuilt around the copies (an ``OrderedDict`` keeps its
type and a module state dict's ``_metadata``); other leaves (numbers, strings, ...) are
deep-copied, so the snapshot shares nothing mutable with the state.
Tensors that share storage (tied weights) become separate copies.

The caller must not copy into the buffers again while the previous snapshot is being
read (:class:`~hcstore.checkpoints.manager.CheckpointManager.save_async` waits for the
previous save first).
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import torch

__all__ = ["HostSnapshot", "layout_of", "torch_save"]

Layout = tuple[Any, ...]


def layout_of(state: Any) -> Layout:
    """What the buffers of ``state`` depend on: the tree's paths, with every tensor's shape and dtype.

    Two states with the same layout can be copied into the same buffers. Pure.
    """
    return tuple((path, tuple(t.shape), t.dtype) for path, t in _tensors(state, ()))


def _tensors(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], torch.Tensor]]:
    """Every tensor of a nested state, with its path of keys and indices, in a stable order."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, (*path, index))


class HostSnapshot:
    """Reusable host buffers for the tensors of a state dict, and the copy into them.

    Args:
        pin_memory: pin the buffers (default: when CUDA is available), so GPU tensors are
            copied by DMA without blocking the host.
    """

    def __init__(self, *, pin_memory: bool | None = None) -> None:
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._layout: Layout | None = None
        self._buffers: list[torch.Tensor] = []

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers now."""
        return sum(b.numel() * b.element_size() for b in self._buffers)

    def copy(self, state: Any) -> Any:
        """A copy of ``state`` whose tensors live in this object's buffers; returns once every byte is copied.

        The copy is valid until the next call. Buffers are (re)allocated only when the layout changes.

        Raises:
            TypeError: a tensor is sparse or otherwise not strided (it has no plain bytes to copy).
        """
        layout = layout_of(state)
        tensors = [t for _, t in _tensors(state, ())]
        if layout != self._layout:
            self._buffers = [self._allocate(t) for t in tensors]
            self._layout = layout
        devices = set()
        with torch.no_grad():
            for buffer, tensor in zip(self._buffers, tensors, strict=True):
                buffer.copy_(tensor, non_blocking=tensor.is_cuda)
                if tensor.is_cuda:
                    devices.add(tensor.device)
        for device in devices:
            torch.cuda.synchronize(device)
        return _rebuild(state, iter(self._buffers))

    def _allocate(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.layout != torch.strided:
            shape = tuple(tensor.shape)
            raise TypeError(f"cannot snapshot a {tensor.layout} tensor of shape {shape}: only dense tensors")
        return torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=self.pin_memory)


def torch_save(state: Any, f: BinaryIO) -> None:
    """``torch.save(state, f)``: how a snapshot is written into a checkpoint file."""
    torch.save(state, f)


def _rebuild(value: Any, buffers: Iterator[torch.Tensor]) -> Any:
    """``value`` with its tensors replaced, in :func:`_tensors` order, by ``buffers``."""
    if isinstance(value, torch.Tensor):
        return next(buffers)
    if isinstance(value, Mapping):
        items = {key: _rebuild(item, buffers) for key, item in value.items()}
        rebuilt = collections.OrderedDict(items) if isinstance(value, collections.OrderedDict) else items
        if hasattr(value, "_metadata"):  # a module's state_dict(): load_state_dict reads its versions
            rebuilt._metadata = copy.deepcopy(value._metadata)  # type: ignore[attr-defined]
        return rebuilt
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_rebuild(item, buffers) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_rebuild(item, buffers) for item in value)
    return copy.deepcopy(value)
