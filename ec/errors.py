"""Errors raised by the erasure-coding package.

One small family rooted at :class:`ECError`, with built-in bases where they fit,
so callers can catch either the family or the built-in:

- :class:`FragmentFormatError` (also a :class:`ValueError`): a fragment file or
  header is malformed -- bad magic, truncated, checksum mismatch, a field of the
  wrong type or out of range. The data is *corrupt*.
- :class:`FormatVersionError`: a well-formed fragment written in a format version
  this code does not know. The data may be fine; the reader is too old.
- :class:`DecodeError`: the chunks handed to a codec cannot give back the data
  (fewer than ``k``, mismatched lengths). The data is *missing*, not corrupt.
- :class:`CodecUnavailable`: the codec named in a request or in a fragment
  trailer is unknown or its optional library is not installed.

Messages name the offending field or value, so that a log line alone tells an
operator what was wrong.
"""

from __future__ import annotations

__all__ = [
    "CodecUnavailable",
    "DecodeError",
    "ECError",
    "FormatVersionError",
    "FragmentFormatError",
]


class ECError(Exception):
    """Base class of every error raised by the ``ec`` package."""


class FragmentFormatError(ECError, ValueError):
    """A fragment file, trailer or header is malformed or fails its checksum."""


class FormatVersionError(FragmentFormatError):
    """A fragment was written in a format version this code cannot read."""


class DecodeError(ECError):
    """The chunks given to a codec are not enough, or not consistent, to decode."""


class CodecUnavailable(ECError):
    """A codec name is unknown, or its optional backing library is not installed."""
