"""Pure placement for hcstore: where fragments live and which ones a reader fetches.

Everything here is a function of its inputs, with no I/O: weighted rendezvous hashing
(:mod:`placement.hrw`, a frozen, versioned hash format), the cluster map
(:mod:`placement.cluster_map`) and the changes between two of its versions
(:mod:`placement.map_delta`), failure domains (:mod:`placement.domains`), object
placement and movement plans (:mod:`placement.place`), quorum arithmetic (home sets, write
quorums, read candidates and what silent nodes leave unproven: :mod:`placement.quorum`), read plans
(:mod:`placement.read_plan`) and mountpath choice within a node
(:mod:`placement.mountpath`). Clients and agents that hold the same cluster map compute
the same answers, so no placement table exists to store or lose.
"""

from placement.cluster_map import (
    LABEL_LEVELS,
    NODE_STATES,
    READABLE_STATES,
    ROLES,
    WRITABLE_STATES,
    ClusterMap,
    Grant,
    Labels,
    Node,
)
from placement.domains import failure_domains
from placement.hrw import (
    HRW_VERSION,
    RankIndex,
    hrw_hash,
    hrw_score,
    hrw_score_matrix,
    id_hash,
    key_hash,
    rank,
    rank_ids,
)
from placement.map_delta import MapDelta
from placement.mountpath import choose_mountpaths
from placement.place import Placement, place, plan_moves
from placement.quorum import (
    Proof,
    home_map,
    home_set,
    home_write_quorum,
    listing_proof,
    prove,
    read_candidates,
    schemes_of,
    smallest_quorum,
    write_quorum,
)
from placement.read_plan import ReadPlan, plan_read

__all__ = [
    "HRW_VERSION",
    "LABEL_LEVELS",
    "NODE_STATES",
    "READABLE_STATES",
    "ROLES",
    "WRITABLE_STATES",
    "ClusterMap",
    "Grant",
    "Labels",
    "MapDelta",
    "Node",
    "Placement",
    "Proof",
    "RankIndex",
    "ReadPlan",
    "choose_mountpaths",
    "failure_domains",
    "hrw_hash",
    "hrw_score",
    "home_map",
    "home_set",
    "home_write_quorum",
    "hrw_score_matrix",
    "id_hash",
    "key_hash",
    "listing_proof",
    "place",
    "plan_moves",
    "plan_read",
    "prove",
    "rank",
    "rank_ids",
    "read_candidates",
    "schemes_of",
    "smallest_quorum",
    "write_quorum",
]
