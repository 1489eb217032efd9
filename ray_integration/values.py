"""How Python values become objects and back: bytes as they are, numpy arrays as raw buffers.

The kind of value travels in the object's metadata (``hcstore.type``), so a
reader allocates a numpy array of the right shape and the fragments are
decoded straight into it. Any other value is pickled (protocol 5), as Ray
itself does, so only read objects written by code you trust.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

TYPE_KEY = "hcstore.type"


def encode(value: Any) -> tuple[memoryview | bytes, dict[str, str]]:
    """``(buffer, meta)`` to store for ``value``; the buffer is a view where possible (no copy)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return memoryview(value).cast("B"), {}
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        array = value if value.flags.c_contiguous else value.copy(order="C")
        meta = {TYPE_KEY: "ndarray", "dtype": array.dtype.str, "shape": json.dumps(list(array.shape))}
        return byte_view(array).data, meta  # ndarray.data: a memoryview of the array's buffer
    return pickle.dumps(value, protocol=5), {TYPE_KEY: "pickle"}


def byte_view(array: np.ndarray) -> np.ndarray:
    """A flat ``uint8`` view of a C-contiguous array (any shape, empty ones included): no copy."""
    return array.reshape(-1).view(np.uint8)


def empty_for(meta: Mapping[str, str] | None, size: int) -> np.ndarray:
    """A writable array to read an object of ``size`` bytes into, shaped as its metadata says.

    Raises:
        ValueError: the metadata describes an array whose size is not ``size``.
    """
    meta = meta or {}
    if meta.get(TYPE_KEY) != "ndarray":
        return np.empty(size, dtype=np.uint8)
    dtype, shape = np.dtype(meta["dtype"]), tuple(json.loads(meta["shape"]))
    array = np.empty(shape, dtype=dtype)
    if array.nbytes != size:
        raise ValueError(f"object metadata says {dtype}{list(shape)} ({array.nbytes} bytes) but it holds {size}")
    return array


def decode(meta: Mapping[str, str] | None, array: np.ndarray) -> Any:
    """The value an object read into ``array`` (from :func:`empty_for`) stands for."""
    kind = (meta or {}).get(TYPE_KEY, "")
    if kind == "ndarray":
        return array
    if kind == "pickle":
        return pickle.loads(array.data)
    return array.tobytes()
