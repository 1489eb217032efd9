"""Erasure-coding choices made by users, checked where they enter hcstore.

The ``ec`` package below hcstore reports a bad scheme as a ``ValueError`` and an
unknown codec as ``ec.errors.CodecUnavailable``; here they become members of the
hcstore error family, with messages that say what was asked for and what is
allowed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from ec import Codec, CodecUnavailable, make_codec, parse_ec
from ec.buffer import Buffer, nbytes
from hcstore.errors import InvalidRequest, UnknownCodec


class CodecObserver(Protocol):
    """Told of every stripe a codec from :func:`codec_for` encodes or decodes while it observes."""

    def encoded(self, codec: str, seconds: float, nbytes: int) -> None:
        """``nbytes`` of data were encoded by ``codec`` in ``seconds``."""

    def decoded(self, codec: str, seconds: float, nbytes: int) -> None:
        """``nbytes`` of data were rebuilt by ``codec`` from parity in ``seconds``."""


_observer: ContextVar[CodecObserver | None] = ContextVar("codec_observer", default=None)


@contextmanager
def observing_codecs(observer: CodecObserver | None) -> Iterator[None]:
    """Within the block (on this thread), codecs from :func:`codec_for` report their work to ``observer``.

    An agent's background repair runs in such a block, so the agent's metrics count the
    coding it does; anywhere else codecs are not wrapped and cost nothing extra.
    """
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


def parse_ec_spec(spec: object, *, what: str = "") -> tuple[int, int]:
    """``(k, m)`` of an erasure-coding scheme such as ``"4+2"``.

    Args:
        spec: the scheme as the user gave it.
        what: how the scheme was given (``"ec"``, ``"setting ec"``), to begin the message with.

    Raises:
        InvalidRequest: the scheme is malformed, or ``k``/``m`` are out of range (the message quotes it).
    """
    try:
        return parse_ec(spec)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidRequest(f"{what}: {exc}" if what else str(exc)) from None


def codec_for(name: str, k: int, m: int) -> Codec:
    """The codec ``name`` for ``k+m`` (reporting its work inside :func:`observing_codecs`).

    Raises:
        UnknownCodec: no such codec, or its library is not installed here.
        InvalidRequest: the codec cannot code ``k+m``.
    """
    try:
        codec = make_codec(name, k, m)
    except CodecUnavailable as exc:
        raise UnknownCodec(f"codec {name!r} cannot be used here: {exc}") from None
    except ValueError as exc:
        raise InvalidRequest(f"codec {name!r} cannot code {k}+{m}: {exc}") from None
    observer = _observer.get()
    return codec if observer is None else ObservedCodec(codec, observer)


def check_codec(name: str, k: int, m: int) -> None:
    """Check that codec ``name`` is installed here and can code ``k+m`` (raises as :func:`codec_for`)."""
    codec_for(name, k, m)


class ObservedCodec(Codec):
    """A codec that tells an observer how long each stripe's encoding and decoding took.

    A decode that needs no arithmetic (all data chunks at hand) is not reported.
    """

    def __init__(self, codec: Codec, observer: CodecObserver) -> None:
        super().__init__(codec.k, codec.m)
        self.name = codec.name
        self.inner = codec
        self.observer = observer

    def __reduce__(self) -> tuple[Any, ...]:
        return self.inner.__reduce__()  # another process gets the plain codec

    def encode(self, data: Sequence[Buffer]) -> list[Buffer]:
        """Encode with the wrapped codec, and report it."""
        started = time.perf_counter()
        parity = self.inner.encode(data)
        self.observer.encoded(self.name, time.perf_counter() - started, sum(nbytes(chunk) for chunk in data))
        return parity

    def decode(self, chunks: Mapping[int, Buffer]) -> list[Buffer]:
        """Decode with the wrapped codec, and report it when parity was used."""
        if all(i in chunks for i in range(self.k)):
            return self.inner.decode(chunks)
        started = time.perf_counter()
        data = self.inner.decode(chunks)
        self.observer.decoded(self.name, time.perf_counter() - started, sum(nbytes(chunk) for chunk in data))
        return data

    def _encode(self, data: Sequence[Buffer]) -> list[Buffer]:
        return self.inner._encode(data)

    def _decode(self, chunks: Mapping[int, Buffer]) -> list[Buffer]:
        return self.inner._decode(chunks)
