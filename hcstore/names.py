"""Validation of bucket names, object keys and ``hcstore://`` URLs.

Buckets follow the S3 rules that matter here (3-63 characters of lowercase
letters, digits, ``.``, ``-`` and ``_``). Keys are any non-empty UTF-8 text of
at most 1024 bytes without NUL (a lone surrogate, such as Python makes of bytes
that are not UTF-8, is not text and is refused); ``/`` is an ordinary character that tools treat
as a directory separator. Keys never become file names on disk (fragment files
are named by a hash of the key), so no key can escape a mountpath.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hcstore.errors import InvalidRequest

SCHEME = "hcstore://"
MAX_KEY_BYTES = 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


def check_bucket(bucket: object) -> str:
    """Return ``bucket`` if it is a valid bucket name.

    Raises:
        InvalidRequest: the name is not valid, with the rule it broke.
    """
    if not isinstance(bucket, str) or not _BUCKET_RE.match(bucket):
        raise InvalidRequest(
            f"invalid bucket name {bucket!r}: use 3-63 lowercase letters, digits, '.', '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return bucket


def _utf8_size(text: str, what: str) -> int:
    """The UTF-8 size of ``text``; InvalidRequest when it holds a lone surrogate (it has no UTF-8 form)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        shown = repr(text) if len(text) <= 80 else repr(text[:77]) + "..."
        raise InvalidRequest(
            f"invalid {what} {shown}: not valid Unicode text, it holds a lone surrogate "
            f"{text[exc.start]!r} at character {exc.start} (bytes that were not UTF-8?)"
        ) from None


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid object key.

    Raises:
        InvalidRequest: the key is empty, too long, contains NUL, or is not valid Unicode text.
    """
    if not isinstance(key, str) or not key:
        raise InvalidRequest(f"invalid object key {key!r}: a key is non-empty text")
    if "\x00" in key:
        raise InvalidRequest(f"invalid object key {key!r}: a key may not contain NUL")
    size = _utf8_size(key, "object key")
    if size > MAX_KEY_BYTES:
        raise InvalidRequest(f"invalid object key: {size} bytes, the limit is {MAX_KEY_BYTES}")
    return key


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid key prefix (may be empty)."""
    if not isinstance(prefix, str) or "\x00" in prefix or _utf8_size(prefix, "key prefix") > MAX_KEY_BYTES:
        raise InvalidRequest(f"invalid key prefix {prefix!r}")
    return prefix


def check_meta(meta: object) -> dict[str, str]:
    """Return user metadata (a map of text to text) as a new dict if it is valid.

    Raises:
        InvalidRequest: it is not a map of strings to strings, or a key or value is not valid Unicode text.
    """
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidRequest(f"invalid metadata {meta!r}: use a dict of strings to strings")
    for name, value in meta.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequest(f"invalid metadata entry {name!r}: {value!r}: keys and values are strings")
        _utf8_size(name, "metadata key")
        _utf8_size(value, f"value of metadata key {name!r}")
    return dict(meta)


def parse_url(url: str, *, key_required: bool = True) -> tuple[str, str]:
    """Split ``hcstore://bucket/key`` (or ``bucket/key``) into bucket and key.

    Raises:
        InvalidRequest: the URL has no bucket, or no key when one is required.
    """
    path = url[len(SCHEME) :] if url.startswith(SCHEME) else url
    bucket, _, key = path.partition("/")
    check_bucket(bucket)
    if key_required:
        check_key(key)
    elif key:
        check_prefix(key)
    return bucket, key
