"""How Python values become objects and back, without ever running code a writer chose.

Typed values are stored as data and read back as data:

- bytes-like values as they are (no metadata);
- numpy arrays of any dtype that holds no Python objects as their raw buffer, with the dtype
  and shape in the object's metadata (``hcstore.type=ndarray``), so a reader allocates an
  array of the right shape and the fragments are decoded straight into it;
- Arrow tables (when pyarrow is installed) in Arrow's IPC stream format (``hcstore.type=arrow``).

Reading a typed value checks its metadata before anything is allocated (a plain dtype, a
shape whose size is the object's), and never unpickles.

Any other value is pickled (protocol 5) only when the writer asks for it
(``allow_pickle=True``); the object's metadata then carries an HMAC-SHA256 under the cluster
secret (:mod:`hcstore.secret`) over a domain tag, the object's bucket and key and the pickled
bytes. A reader unpickles only when it asks for it too (``allow_pickle=True``) and the MAC
verifies under the secret it holds: a pickle stored by anyone without the secret, or moved to
another key, raises :class:`~hcstore.errors.UntrustedValue` and runs nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import pickle
import struct
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hcstore.errors import InvalidRequest, UnsupportedValue, UntrustedValue

TYPE_KEY = "hcstore.type"
MAC_KEY = "hcstore.mac"
NDARRAY, ARROW, PICKLE = "ndarray", "arrow", "pickle"
MAC_TAG = b"hcstore pickled value v1\x00"  # domain separation: this MAC signs nothing else
MAX_DIMS = 64  # numpy's own limit
MAX_SHAPE_TEXT = 4096  # characters of the shape's JSON, far above any real shape's
MAX_DTYPE_TEXT = 16384  # characters of a structured dtype's JSON description

Secret = bytes | Callable[[], bytes] | None
OPT_IN = (
    "store it as bytes, a numpy array (no object dtype) or an Arrow table, or pass allow_pickle=True "
    "to pickle it (signed with the cluster secret; readers must pass allow_pickle=True too)"
)


def encode(
    value: Any, *, allow_pickle: bool = False, secret: Secret = None, bucket: str = "", key: str = ""
) -> tuple[memoryview | bytes, dict[str, str]]:
    """``(buffer, meta)`` to store for ``value`` at ``bucket/key``; the buffer is a view where possible.

    Args:
        value: bytes-like, a numpy array, an Arrow table, or (with ``allow_pickle``) anything picklable.
        allow_pickle: pickle a value of any other type, and sign it.
        secret: the cluster secret that signs a pickle, or a function that returns it (called only
            when a pickle is written).
        bucket: the bucket the value is stored in (signed with a pickle).
        key: its key (signed with a pickle).

    Raises:
        UnsupportedValue: a value of another type, and ``allow_pickle`` is False.
        InvalidRequest: ``allow_pickle`` with no secret.
    """
    typed = encode_typed(value)
    if typed is not None:
        return typed
    if not allow_pickle:
        raise UnsupportedValue(f"cannot store a value of type {_type_name(value)} without pickle: {OPT_IN}")
    data = pickle.dumps(value, protocol=5)
    return data, {TYPE_KEY: PICKLE, MAC_KEY: mac(_secret_of(secret, bucket, key), bucket, key, data)}


def encode_typed(value: Any) -> tuple[memoryview | bytes, dict[str, str]] | None:
    """``(buffer, meta)`` for a value stored as data (bytes, numpy array, Arrow table); None for others."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return memoryview(value).cast("B"), {}
    if isinstance(value, np.ndarray) and not value.dtype.hasobject and value.dtype.itemsize > 0:
        dtype = _dtype_text(value.dtype)
        if dtype is None:
            return None
        array = value if value.flags.c_contiguous else value.copy(order="C")
        meta = {TYPE_KEY: NDARRAY, "dtype": dtype, "shape": json.dumps(list(array.shape))}
        return byte_view(array).data, meta  # ndarray.data: a memoryview of the array's buffer
    pa = sys.modules.get("pyarrow")  # a table exists only if pyarrow is imported: never import it here
    if pa is not None and isinstance(value, pa.Table):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as stream:
            stream.write_table(value)
        return memoryview(sink.getvalue()), {TYPE_KEY: ARROW}
    return None


def byte_view(array: np.ndarray) -> np.ndarray:
    """A flat ``uint8`` view of a C-contiguous array (any shape, empty ones included): no copy."""
    return array.reshape(-1).view(np.uint8)


def empty_for(
    meta: Mapping[str, str] | None, size: int, *, allow_pickle: bool = False, bucket: str = "", key: str = ""
) -> np.ndarray:
    """A writable array to read an object of ``size`` bytes into, shaped as its metadata says.

    The metadata is checked first, and nothing is allocated for an object that :func:`decode`
    would refuse.

    Raises:
        InvalidRequest: the metadata names an unknown kind of value, a dtype that holds Python
            objects, or a dtype and shape whose size is not ``size``.
        UntrustedValue: the object is a pickle, and ``allow_pickle`` is False or it carries no MAC.
    """
    meta = meta or {}
    kind = meta.get(TYPE_KEY, "")
    if kind == NDARRAY:
        dtype, shape = array_layout(meta, size, where=_where(bucket, key))
        return np.empty(shape, dtype=dtype)
    if kind == PICKLE:
        _check_pickle_allowed(meta, allow_pickle, bucket, key)
    elif kind not in ("", ARROW):
        raise InvalidRequest(f"{_where(bucket, key)} holds a value of unknown kind {kind!r} ({TYPE_KEY})")
    return np.empty(size, dtype=np.uint8)


def decode(
    meta: Mapping[str, str] | None,
    array: np.ndarray,
    *,
    allow_pickle: bool = False,
    secret: Secret = None,
    bucket: str = "",
    key: str = "",
) -> Any:
    """The value an object read into ``array`` (from :func:`empty_for`) stands for.

    Args:
        meta: the object's metadata.
        array: its bytes, read into the array :func:`empty_for` made.
        allow_pickle: unpickle a pickled value whose MAC verifies under ``secret``.
        secret: the cluster secret, or a function that returns it (called only for a pickle).
        bucket: the object's bucket (its MAC must name it).
        key: the object's key (its MAC must name it).

    Raises:
        UntrustedValue: a pickle not allowed, without a MAC, or whose MAC does not verify.
        InvalidRequest: metadata that does not describe the bytes.
    """
    meta = meta or {}
    kind = meta.get(TYPE_KEY, "")
    where = _where(bucket, key)
    if kind == NDARRAY:
        dtype, shape = array_layout(meta, array.nbytes, where=where)
        if array.dtype != dtype or array.shape != shape:
            raise InvalidRequest(f"{where}: read into an array of {array.dtype}{list(array.shape)}, not the stored one")
        return array
    if kind == PICKLE:
        _check_pickle_allowed(meta, allow_pickle, bucket, key)
        data = array.data.cast("B") if array.ndim == 1 and array.dtype == np.uint8 else byte_view(array).data
        expected = mac(_secret_of(secret, bucket, key), bucket, key, data)
        if not hmac.compare_digest(expected.encode(), str(meta[MAC_KEY]).encode()):
            raise UntrustedValue(
                f"{where} holds a pickle whose MAC does not verify under the cluster secret (written "
                "without the secret, under another name, or altered since): not unpickled"
            )
        return pickle.loads(data)
    if kind == ARROW:
        return _arrow_table(array, where)
    if kind:
        raise InvalidRequest(f"{where} holds a value of unknown kind {kind!r} ({TYPE_KEY})")
    return array.tobytes()


def mac(secret: bytes, bucket: str, key: str, data: bytes | memoryview) -> str:
    """The hex HMAC-SHA256 under ``secret`` of a pickled value stored at ``bucket/key``."""
    signer = hmac.new(secret, MAC_TAG, hashlib.sha256)
    for name in (bucket.encode(), key.encode()):
        signer.update(struct.pack(">Q", len(name)) + name)  # length-prefixed: no two names sign alike
    signer.update(data)
    return signer.hexdigest()


def array_layout(meta: Mapping[str, str], size: int, *, where: str = "the object") -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an ``ndarray`` object's metadata describes, checked against its ``size`` in bytes.

    Raises:
        InvalidRequest: a dtype that is not plain data (Python objects, zero-sized), a shape that is
            not a list of non-negative integers, or a size that is not the dtype's times the shape's.
    """
    dtype = _parse_dtype(meta.get("dtype"), where)
    shape_text = meta.get("shape")
    try:
        if not isinstance(shape_text, str) or len(shape_text) > MAX_SHAPE_TEXT:
            raise ValueError("not a short JSON list")
        shape = json.loads(shape_text)
    except ValueError:
        raise InvalidRequest(f"{where}: its shape metadata {str(shape_text)[:80]!r} is not a JSON list") from None
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(n) is int and n >= 0 for n in shape)  # a bool is no dimension
    ):
        raise InvalidRequest(f"{where}: its shape {str(shape)[:80]} is not a list of at most {MAX_DIMS} sizes >= 0")
    nbytes = dtype.itemsize * math.prod(shape)  # Python integers: a lying shape cannot overflow
    if nbytes != size:
        raise InvalidRequest(
            f"{where}: its metadata says {dtype}{shape} ({nbytes} bytes) but it holds {size}; nothing was allocated"
        )
    return dtype, tuple(shape)


def _dtype_text(dtype: np.dtype) -> str | None:
    """The metadata text of a dtype: its ``str`` (``"<f4"``), or the JSON of a structured one's fields.

    None for a dtype that text does not describe exactly (overlapping or reordered fields).
    """
    try:
        text = dtype.str if dtype.fields is None else json.dumps(np.lib.format.dtype_to_descr(dtype))
        return text if _parse_dtype(text, "") == dtype else None
    except (ValueError, TypeError):  # InvalidRequest is a ValueError
        return None


def _parse_dtype(text: Any, where: str) -> np.dtype:
    """The dtype of ``text``, refused unless it is plain data: no Python objects, no zero-sized items."""
    if not isinstance(text, str) or not text or len(text) > MAX_DTYPE_TEXT:
        raise InvalidRequest(f"{where}: its dtype metadata is missing or too long")
    try:
        if text.startswith("["):  # a structured dtype's fields, as numpy's .npy headers describe them
            dtype = np.lib.format.descr_to_dtype(_descr(json.loads(text)))
        else:
            dtype = np.dtype(text)
    except (TypeError, ValueError, KeyError, IndexError, RecursionError):
        raise InvalidRequest(f"{where}: its dtype metadata {text[:80]!r} is not a numpy dtype") from None
    if dtype.hasobject:
        raise InvalidRequest(f"{where}: its dtype {text[:80]!r} holds Python objects; refused")
    if dtype.itemsize == 0:
        raise InvalidRequest(f"{where}: its dtype {text[:80]!r} has zero-sized items; refused")
    return dtype


def _descr(value: Any) -> Any:
    """A structured dtype's description from JSON (lists) back to what numpy expects (tuples)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise TypeError(f"not a dtype description: {value!r}")
    fields = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise TypeError(f"not a field description: {entry!r}")
        name = tuple(entry[0]) if isinstance(entry[0], list) else entry[0]
        field: tuple[Any, ...] = (name, _descr(entry[1]))
        if len(entry) == 3:
            field += (tuple(entry[2]) if isinstance(entry[2], list) else entry[2],)
        fields.append(field)
    return fields


def _arrow_table(array: np.ndarray, where: str) -> Any:
    """The Arrow table stored in IPC stream format in ``array``'s bytes (zero-copy), validated."""
    try:
        import pyarrow as pa
    except ImportError:
        raise InvalidRequest(f"{where} holds an Arrow table, and pyarrow is not installed here") from None
    try:
        with pa.ipc.open_stream(pa.py_buffer(byte_view(array))) as reader:
            table = reader.read_all()
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:  # pyarrow reports bad input as any of them
        raise InvalidRequest(f"{where} is not a valid Arrow IPC stream: {exc}") from None
    return table


def _check_pickle_allowed(meta: Mapping[str, str], allow_pickle: bool, bucket: str, key: str) -> None:
    """Refuse, before anything is read, a pickle the reader did not allow or that carries no MAC."""
    where = _where(bucket, key)
    if not allow_pickle:
        raise UntrustedValue(
            f"{where} holds a pickled Python value, and unpickling runs code: pass allow_pickle=True "
            "to read it (it is unpickled only if signed with the cluster secret)"
        )
    if not meta.get(MAC_KEY):
        raise UntrustedValue(
            f"{where} holds a pickle with no MAC ({MAC_KEY}): it was not written by a holder of the "
            "cluster secret, and is not unpickled"
        )


def _secret_of(secret: Secret, bucket: str, key: str) -> bytes:
    found = secret() if callable(secret) else secret
    if not found:
        raise InvalidRequest(
            f"{_where(bucket, key)}: a pickle is signed and verified with the cluster secret: none given"
        )
    return found


def _where(bucket: str, key: str) -> str:
    return f"hcstore://{bucket}/{key}" if bucket or key else "the object"


def _type_name(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"numpy.ndarray of dtype {value.dtype}"
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
