"""Codec selection: the registry of codec implementations by name.

Apart from :mod:`ec.codec` (the interface the implementations subclass), so that
the registry imports the implementations and nothing imports back.
"""

from __future__ import annotations

from ec.codec import Codec, validate_km
from ec.errors import CodecUnavailable
from ec.isal_codec import IsalCodec
from ec.replica_codec import ReplicaCodec
from ec.zfec_codec import ZfecCodec

__all__ = ["available_codecs", "default_codec_name", "make_codec"]


def _codec_classes() -> dict[str, type[Codec]]:
    return {cls.name: cls for cls in (ZfecCodec, ReplicaCodec, IsalCodec)}


def make_codec(name: str, k: int, m: int) -> Codec:
    """Build the codec ``name`` for ``k`` data and ``m`` parity chunks.

    Args:
        name: ``"zfec"``, ``"replica"`` or ``"isal"``.
        k: Data chunks per stripe.
        m: Parity chunks per stripe.

    Returns:
        A codec; instances are cheap, their library tables are cached per ``(k, m)``.

    Raises:
        CodecUnavailable: ``name`` is unknown, or its library is not installed.
        ValueError: ``k``/``m`` are out of range for this codec (named in the message).
    """
    classes = _codec_classes()
    cls = classes.get(name)
    if cls is None:
        raise CodecUnavailable(f"unknown codec {name!r}; known codecs: {sorted(classes)}")
    return cls(k, m)


def available_codecs() -> list[str]:
    """Return the names of the codecs usable in this process, sorted."""
    return sorted(name for name, cls in _codec_classes().items() if cls.available())


def default_codec_name(k: int, m: int) -> str:
    """Choose the codec for a new ``k+m`` write.

    Args:
        k: Data chunks per stripe.
        m: Parity chunks per stripe.

    Returns:
        ``"isal"`` when pyeclib with a working ISA-L backend is installed and
        supports ``k+m``; otherwise ``"zfec"``.

    Raises:
        ValueError: ``k``/``m`` are out of range.
    """
    validate_km(k, m)
    return IsalCodec.name if IsalCodec.available() and IsalCodec.supports(k, m) else "zfec"
