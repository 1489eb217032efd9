"""Golden vectors for the frozen HRW hash format and for placement on a fixed map.

Fragments already on disk sit where these functions said they should; a change that
alters any value here relocates stored data and must come with a new ``HRW_VERSION``.
Regenerate (only together with a version bump) with::

    python tests/unit/test_placement_golden.py --regenerate
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from placement import (
    HRW_VERSION,
    ClusterMap,
    Node,
    choose_mountpaths,
    hrw_hash,
    hrw_score,
    place,
    rank_ids,
)

GOLDEN = Path(__file__).parent / "golden" / "placement_hrw_v1.json"
KEYS = ["", "a", "bucket/key", "bucket/dir/obj-0001", "ünïcødé/ключ", "b/\x00nul", "x" * 300]
IDS = ["n1", "node-00", "node-01", "10.0.0.5:7700", "mp-3f9a", "ü"]
PLACE_KEYS = [f"ckpt/step-{i:04d}/shard-{i % 7}" for i in range(16)]
CODES = [(4, 2), (8, 3), (1, 2), (6, 0)]


def golden_map() -> ClusterMap:
    """12 nodes: zones a, b, c; two racks per zone; one host per node; n05 weighs 2."""
    nodes = []
    for i in range(12):
        zone = "abc"[i // 4]
        rack = f"r{(i // 2) % 2}"
        labels = {"zone": zone, "rack": rack, "host": f"h{i:02d}"}
        weight = 2.0 if i == 5 else 1.0
        nodes.append(Node(f"n{i:02d}", f"tcp://10.0.0.{i}:7700", weight, labels))
    return ClusterMap(7, tuple(nodes))


def compute() -> dict:
    cmap = golden_map()
    return {
        "hrw_version": HRW_VERSION,
        "hrw_hash": [[k, i, hrw_hash(k, i)] for k in KEYS for i in IDS],
        "hrw_score": [[k, i, w, hrw_score(k, i, w)] for k in KEYS[:3] for i in IDS[:3] for w in (1.0, 2.5)],
        "rank_ids": [[k, rank_ids(k, IDS)] for k in KEYS],
        "mountpaths": [[k, choose_mountpaths(k, ["mp0", "mp1", "mp2", "mp3"], [1.0, 1.0, 2.0, 0.5])] for k in KEYS],
        "map": cmap.to_dict(),
        "place": [[key, k, m, list(place(key, cmap, k, m).nodes)] for key in PLACE_KEYS for k, m in CODES],
    }


def load() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_version_matches() -> None:
    assert load()["hrw_version"] == HRW_VERSION == 1


def test_hrw_hash_vectors() -> None:
    for key, node_id, expected in load()["hrw_hash"]:
        assert hrw_hash(key, node_id) == expected, (key, node_id)


def test_hrw_score_vectors() -> None:
    for key, node_id, weight, expected in load()["hrw_score"]:
        assert math.isclose(hrw_score(key, node_id, weight), expected, rel_tol=1e-12)


def test_rank_and_mountpath_vectors() -> None:
    golden = load()
    for key, expected in golden["rank_ids"]:
        assert rank_ids(key, IDS) == expected
        assert rank_ids(key, list(reversed(IDS))) == expected
    for key, expected in golden["mountpaths"]:
        assert choose_mountpaths(key, ["mp0", "mp1", "mp2", "mp3"], [1.0, 1.0, 2.0, 0.5]) == expected


def test_place_vectors_on_fixed_map() -> None:
    golden = load()
    cmap = ClusterMap.from_dict(golden["map"])
    assert cmap == golden_map()
    for key, k, m, expected in golden["place"]:
        assert list(place(key, cmap, k, m).nodes) == expected, (key, k, m)


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(__doc__)
    GOLDEN.write_text(json.dumps(compute(), indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
