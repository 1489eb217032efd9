"""Which mountpath (SSD) of a node stores a fragment.

Within a node, fragments are spread over mountpaths with the same weighted rendezvous
hash that spreads objects over nodes (:mod:`placement.hrw`), ranking mountpath ids for
the fragment's key. Weighting by capacity fills disks of different sizes evenly; adding
or removing a disk moves only about ``1/N`` of the node's fragments; and a reader finds
a fragment by trying mountpaths in the same order the writer did. The first mountpath
is preferred; the rest are the fallback order when it is full or disabled.

Mountpaths are identified by the id written inside them, never by device name or path,
so a disk that comes back under another name keeps its fragments.
"""

from __future__ import annotations

from collections.abc import Sequence

from placement.hrw import rank_ids

__all__ = ["choose_mountpaths"]


def choose_mountpaths(key: str, mountpath_ids: Sequence[str], weights: Sequence[float] | None = None) -> list[str]:
    """Return mountpath ids in preference order for a fragment.

    Args:
        key: The fragment's key (as the local store names it).
        mountpath_ids: Ids of the node's usable mountpaths.
        weights: One capacity weight (> 0) per mountpath; all 1.0 if omitted.

    Returns:
        The mountpath ids, preferred first, fallbacks after.

    Raises:
        ValueError: If ``weights`` does not match ``mountpath_ids``.
    """
    return rank_ids(key, mountpath_ids, weights)
