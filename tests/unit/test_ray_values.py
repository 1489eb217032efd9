"""Values to objects and back: data stored as data, pickles only on request, signed, and verified before they run."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hcstore.errors import InvalidRequest, UnsupportedValue, UntrustedValue
from ray_integration.values import MAC_KEY, TYPE_KEY, byte_view, decode, empty_for, encode, mac

SECRET = bytes(range(32))
WHERE = {"bucket": "b", "key": "k"}


def stored(value, **options):
    """What a put stores: the bytes and the metadata."""
    buffer, meta = encode(value, **options)
    return bytes(buffer), meta


def read_back(raw, meta, **options):
    """What a read returns for the stored bytes and metadata."""
    where = {name: options[name] for name in ("bucket", "key") if name in options}
    array = empty_for(meta, len(raw), allow_pickle=options.get("allow_pickle", False), **where)
    byte_view(array)[:] = np.frombuffer(raw, dtype=np.uint8)
    return decode(meta, array, **options)


def round_trip(value, **options):
    raw, meta = stored(value, **options)
    return read_back(raw, meta, **options)


def pickled(**options):
    """A dict stored with allow_pickle=True at b/k, and the options that read it back."""
    options = {"allow_pickle": True, "secret": SECRET, **WHERE, **options}
    return *stored({"a": [1, 2.5, None]}, **options), options


# ---------------------------------------------------------------------- typed values


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.complex64, np.bool_, ">i8", "<M8[ns]"]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    )
)
def test_arrays_round_trip_with_dtype_and_shape(array):
    back = round_trip(array)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array, equal_nan=array.dtype.kind in "fcmM")


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype([("a", "<i4"), ("b", [("c", "<f8", (2,))])]),
        np.dtype([(("title", "a"), "<i4"), ("b", "u1")], align=True),  # padding and a title
        np.dtype("<U3"),
        np.dtype("S2"),
        np.dtype("V5"),
    ],
)
def test_structured_and_flexible_dtypes_round_trip(dtype):
    array = np.zeros(3, dtype=dtype)
    array.view(np.uint8)[:] = np.arange(array.nbytes, dtype=np.uint8) % 50 + 40
    back = round_trip(array)
    assert back.dtype == dtype and back.tobytes() == array.tobytes()


def test_non_contiguous_arrays_are_stored_contiguous():
    array = np.arange(100, dtype=np.int32).reshape(10, 10)[:, ::3]
    assert np.array_equal(round_trip(array), array)


def test_bytes_are_stored_as_they_are():
    raw, meta = stored(b"abc")
    assert raw == b"abc" and meta == {}
    assert round_trip(bytearray(b"xyz")) == b"xyz"
    assert round_trip(memoryview(b"")) == b""


def test_arrow_tables_round_trip_as_ipc_streams():
    table = pa.table({"x": [1, 2, None], "y": ["a", "bb", "ccc"], "z": [[1.5], [], None]})
    raw, meta = stored(table)
    assert meta == {TYPE_KEY: "arrow"} and not raw.startswith(b"\x80")  # an IPC stream, not a pickle
    assert read_back(raw, meta).equals(table)


def test_a_bad_arrow_stream_is_refused():
    with pytest.raises(InvalidRequest, match="Arrow"):
        read_back(b"\xff" * 64, {TYPE_KEY: "arrow"})


# ---------------------------------------------------------------------- what needs pickle


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"a": 1}, "dict"),
        ("text", "str"),
        (np.array([object()], dtype=object), "numpy.ndarray of dtype object"),
        (np.zeros(2, dtype=[("o", "O")]), "numpy.ndarray"),
        (pa.record_batch({"x": [1]}), "pyarrow.lib.RecordBatch"),
    ],
)
def test_values_that_need_pickle_are_refused_by_default_naming_the_type(value, named):
    with pytest.raises(UnsupportedValue, match=r"allow_pickle=True") as caught:
        encode(value)
    assert named in str(caught.value) and isinstance(caught.value, TypeError)
    assert caught.value.code == "E_VALUE_TYPE"


def test_pickle_without_a_secret_is_refused():
    with pytest.raises(InvalidRequest, match="cluster secret"):
        encode({"a": 1}, allow_pickle=True, **WHERE)


def test_a_signed_pickle_reads_back_only_with_allow_pickle():
    raw, meta, options = pickled()
    assert meta[TYPE_KEY] == "pickle" and len(meta[MAC_KEY]) == 64
    assert read_back(raw, meta, **options) == {"a": [1, 2.5, None]}
    with pytest.raises(UntrustedValue, match="allow_pickle=True") as caught:
        read_back(raw, meta, **{**options, "allow_pickle": False})
    assert caught.value.code == "E_UNTRUSTED_VALUE" and "hcstore://b/k" in str(caught.value)


def test_the_secret_may_be_a_function_called_only_for_a_pickle():
    calls = []

    def secret():
        calls.append(1)
        return SECRET

    round_trip(np.ones(3), allow_pickle=True, secret=secret, **WHERE)
    round_trip(b"data", allow_pickle=True, secret=secret, **WHERE)
    assert calls == []
    assert round_trip([1, 2], allow_pickle=True, secret=secret, **WHERE) == [1, 2]
    assert len(calls) == 2  # once to sign, once to verify


class Boom:
    """Unpickling it raises: a test fails loudly if anything unpickles it."""

    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise AssertionError("a pickle was run")


@pytest.mark.parametrize(
    "change",
    [
        "no mac",
        "empty mac",
        "wrong mac",
        "mac under another secret",
        "bytes changed",
        "another key",
        "another bucket",
        "key moved into the bucket",
    ],
)
def test_unverified_pickles_are_refused_before_anything_runs(change):
    evil = pickle.dumps(Boom(), protocol=5)
    good = mac(SECRET, "b", "k", evil)
    meta, options = {TYPE_KEY: "pickle", MAC_KEY: good}, {"allow_pickle": True, "secret": SECRET, **WHERE}
    if change == "no mac":
        del meta[MAC_KEY]
    elif change == "empty mac":
        meta[MAC_KEY] = ""
    elif change == "wrong mac":
        meta[MAC_KEY] = "0" * 64
    elif change == "mac under another secret":
        meta[MAC_KEY] = mac(b"x" * 32, "b", "k", evil)
    elif change == "bytes changed":
        evil = pickle.dumps(Boom(), protocol=4)  # other bytes, still Boom; the MAC is the protocol 5 pickle's
    elif change == "another key":
        options["key"] = "k2"
    elif change == "another bucket":
        options["bucket"] = "c"
    else:  # "b" + "k/x" must not sign like "b/k" + "x"
        meta[MAC_KEY] = mac(SECRET, "b/k", "x", evil)
        options.update(bucket="b", key="k/x")
    with pytest.raises(UntrustedValue, match="MAC"):
        read_back(evil, meta, **options)


def test_a_signed_pickle_is_verified_and_then_run():
    evil = pickle.dumps(Boom(), protocol=5)
    meta = {TYPE_KEY: "pickle", MAC_KEY: mac(SECRET, "b", "k", evil)}
    with pytest.raises(AssertionError, match="was run"):  # the control: the same bytes do run once signed
        read_back(evil, meta, allow_pickle=True, secret=SECRET, **WHERE)


def test_a_pickle_not_allowed_is_refused_before_its_bytes_are_read():
    with pytest.raises(UntrustedValue, match="allow_pickle"):
        empty_for({TYPE_KEY: "pickle", MAC_KEY: "00"}, 10)
    with pytest.raises(UntrustedValue, match="no MAC"):
        empty_for({TYPE_KEY: "pickle"}, 10, allow_pickle=True)


# ---------------------------------------------------------------------- lying metadata


def array_meta(dtype="<f8", shape="[4]"):
    return {TYPE_KEY: "ndarray", "dtype": dtype, "shape": shape}


@pytest.mark.parametrize(
    ("meta", "size", "message"),
    [
        (array_meta(), 31, "holds 31"),
        (array_meta(shape="[1099511627776, 1099511627776]"), 32, "nothing was allocated"),
        (array_meta(shape=json.dumps([2**62] * 64)), 32, "nothing was allocated"),
        (array_meta(shape="[-4]"), 32, "sizes >= 0"),
        (array_meta(shape="[4.0]"), 32, "sizes >= 0"),
        (array_meta(shape="[true]"), 8, "sizes >= 0"),
        (array_meta(shape='{"a": 1}'), 32, "sizes >= 0"),
        (array_meta(shape=json.dumps([1] * 65)), 8, "at most 64"),
        (array_meta(shape="[4"), 32, "not a JSON list"),
        (array_meta(shape="[" * 100_000), 32, "not a JSON list"),
        ({TYPE_KEY: "ndarray", "dtype": "<f8"}, 32, "not a JSON list"),
        (array_meta(dtype="O"), 32, "Python objects"),
        (array_meta(dtype="|O"), 32, "Python objects"),
        (array_meta(dtype='[["a", "<i8"], ["b", "|O"]]'), 64, "Python objects"),
        (array_meta(dtype='[["a", [["b", "O"]]]]'), 32, "Python objects"),
        (array_meta(dtype="i8,O"), 64, "Python objects"),
        (array_meta(dtype="V0"), 0, "zero-sized"),
        (array_meta(dtype="not a dtype"), 32, "not a numpy dtype"),
        (array_meta(dtype='[["a"]]'), 32, "not a numpy dtype"),
        (array_meta(dtype='{"a": 1}'), 32, "not a numpy dtype"),
        (array_meta(dtype=""), 32, "missing"),
        ({TYPE_KEY: "ndarray", "shape": "[4]"}, 32, "missing"),
        ({TYPE_KEY: "pickle5"}, 32, "unknown kind"),
    ],
)
def test_lying_metadata_is_refused_before_anything_is_allocated(meta, size, message):
    with pytest.raises(InvalidRequest, match=message):
        empty_for(meta, size, allow_pickle=True)
    with pytest.raises(InvalidRequest, match=message):
        decode(meta, np.zeros(size, dtype=np.uint8), allow_pickle=True, secret=SECRET)


def test_decode_checks_the_array_against_the_metadata():
    raw, meta = stored(np.arange(4, dtype=np.float64))
    with pytest.raises(InvalidRequest, match="read into"):
        decode(meta, np.frombuffer(raw, dtype=np.int64).copy())
