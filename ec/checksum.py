"""Per-chunk checksums.

Every chunk of every fragment carries a 32-byte blake3 digest, kept in the
fragment trailer in stripe order. A reader verifies each chunk it uses before
decoding, so a corrupt chunk is treated like a missing one and replaced by
parity; the scrubber re-verifies chunks at rest.

The digest is plain blake3 of the chunk bytes (the chunk as stored, including
any zero padding of the last stripe). It is part of the frozen fragment format
version 1: changing it breaks every stored fragment.
"""

from __future__ import annotations

import hmac

import blake3

from ec.buffer import Buffer, nbytes

__all__ = ["DIGEST_SIZE", "chunk_digest", "verify_chunk"]

#: Size in bytes of one chunk digest.
DIGEST_SIZE = 32

# blake3 hashes large inputs on several threads; below this size the thread
# start-up costs more than it saves.
_MULTITHREAD_MIN = 1 << 20


def chunk_digest(buf: Buffer) -> bytes:
    """Return the 32-byte blake3 digest of one chunk.

    Args:
        buf: The chunk bytes (any buffer; not copied).

    Returns:
        The digest, :data:`DIGEST_SIZE` bytes.
    """
    if nbytes(buf) >= _MULTITHREAD_MIN:
        return blake3.blake3(buf, max_threads=blake3.blake3.AUTO).digest()
    return blake3.blake3(buf).digest()


def verify_chunk(buf: Buffer, digest: bytes) -> bool:
    """Tell whether a chunk matches its recorded digest.

    Args:
        buf: The chunk bytes.
        digest: The digest recorded for it (:data:`DIGEST_SIZE` bytes).

    Returns:
        ``True`` when the chunk's blake3 digest equals ``digest``.
    """
    return hmac.compare_digest(chunk_digest(buf), digest)
