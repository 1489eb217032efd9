"""Erasure-coding choices made by users, checked where they enter hcstore.

The ``ec`` package below hcstore reports a bad scheme as a ``ValueError`` and an
unknown codec as ``ec.errors.CodecUnavailable``; here they become members of the
hcstore error family, with messages that say what was asked for and what is
allowed.
"""

from __future__ import annotations

from ec import Codec, CodecUnavailable, make_codec, parse_ec
from hcstore.errors import InvalidRequest, UnknownCodec


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
    """The codec ``name`` for ``k+m``.

    Raises:
        UnknownCodec: no such codec, or its library is not installed here.
        InvalidRequest: the codec cannot code ``k+m``.
    """
    try:
        return make_codec(name, k, m)
    except CodecUnavailable as exc:
        raise UnknownCodec(f"codec {name!r} cannot be used here: {exc}") from None
    except ValueError as exc:
        raise InvalidRequest(f"codec {name!r} cannot code {k}+{m}: {exc}") from None


def check_codec(name: str, k: int, m: int) -> None:
    """Check that codec ``name`` is installed here and can code ``k+m`` (raises as :func:`codec_for`)."""
    codec_for(name, k, m)
