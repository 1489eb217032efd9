"""Durability model: annual probability of losing data for k+m erasure codes on a GPU-node fleet.

    python benchmarks/durability_model.py --repair-hours 2.0
    python benchmarks/durability_model.py --repair-mbps 300 --node-tb 2      # repair window from a measured rate

Inputs are a *measured* repair window and a *permanent* node-failure rate (a node whose
local data is gone: SSD loss, node swap with wiped disks). Reboots that come back within
the out-interval cause no repair in hcstore and are not failures here. See docs/durability.md
for the formulas and every assumption; everything below is pure and importable.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np

HOURS_PER_YEAR = 8760.0
SCHEMES: tuple[tuple[int, int], ...] = ((4, 2), (8, 2), (10, 4))
PLACEMENTS = ("random", "all", "partitioned")


# --------------------------------------------------------------------------- inputs


def afr_to_hourly_rate(afr: float) -> float:
    """Annualized failure rate (probability a node fails in a year) -> Poisson rate per node-hour."""
    if not 0 <= afr < 1:
        raise ValueError(f"afr must be in [0, 1), got {afr}")
    return -math.log1p(-afr) / HOURS_PER_YEAR


def repair_window_hours(
    node_tb: float, repair_mbps: float, out_interval_minutes: float = 10.0, parallelism: float = 1.0
) -> float:
    """Window during which a failed node's fragments are missing: out-interval + rebuild time.

    ``node_tb`` is the fragment data held by one node (TB, 1e12 bytes); ``repair_mbps`` the
    measured rebuild rate in MB/s (1e6 bytes/s) of *rebuilt* bytes per rebuilding stream;
    ``parallelism`` how many such streams run at once (1 = the measured figure is already the
    whole cluster's rate, the conservative reading).
    """
    if node_tb < 0 or repair_mbps <= 0 or parallelism <= 0 or out_interval_minutes < 0:
        raise ValueError("node_tb >= 0, repair_mbps > 0, parallelism > 0, out_interval_minutes >= 0 required")
    rebuild_s = node_tb * 1e12 / (repair_mbps * 1e6 * parallelism)
    return out_interval_minutes / 60.0 + rebuild_s / 3600.0


def annual_probability(rate_per_hour: float) -> float:
    """P(at least one event in a year) for a Poisson process of the given rate."""
    return -math.expm1(-rate_per_hour * HOURS_PER_YEAR)


def nines(p_loss: float) -> float:
    """Durability nines: -log10(P(loss)); inf when the probability is 0."""
    return math.inf if p_loss <= 0 else -math.log10(p_loss)


# --------------------------------------------------------------------------- one placement group


def _falling(n: int, j: int) -> int:
    """n * (n-1) * ... * (n-j+1)."""
    return math.perm(n, j)


def group_mttdl_hours(
    k: int, m: int, node_failure_rate_per_hour: float, repair_hours: float, repair: str = "parallel"
) -> float:
    """Closed-form MTTDL of one group of n = k+m nodes (first order in lambda*T).

    Birth-death chain on the number of failed nodes i = 0..m+1 (m+1 = loss): failure rate
    (n-i)*lambda, repair rate i*mu ("parallel": every failed node is rebuilt at once, as in
    hcstore) or mu ("serial": one rebuild at a time). With lambda << mu:

        serial:    MTTDL ~= mu^m / (n (n-1) ... (n-m) lambda^(m+1))
        parallel:  MTTDL ~= m! mu^m / (n (n-1) ... (n-m) lambda^(m+1))

    with mu = 1 / repair_hours.
    """
    _check(k, m, node_failure_rate_per_hour, repair_hours)
    if repair not in ("parallel", "serial"):
        raise ValueError(f"repair must be 'parallel' or 'serial', got {repair!r}")
    lam, n = node_failure_rate_per_hour, k + m
    if lam == 0:
        return math.inf
    mu = 1.0 / repair_hours
    factor = math.factorial(m) if repair == "parallel" else 1
    return factor * mu**m / (_falling(n, m + 1) * lam ** (m + 1))


def group_mttdl_exact_hours(
    k: int, m: int, node_failure_rate_per_hour: float, repair_hours: float, repair: str = "parallel"
) -> float:
    """Exact expected time to absorption of the same birth-death chain (exponential repair), from state 0."""
    _check(k, m, node_failure_rate_per_hour, repair_hours)
    lam, n, mu = node_failure_rate_per_hour, k + m, 1.0 / repair_hours
    if lam == 0:
        return math.inf
    # Transient states 0..m; E[i] = 1/out_i + sum_j P(i->j) E[j]  ->  (diag(out) - Q_offdiag) E = 1.
    a = np.zeros((m + 1, m + 1))
    for i in range(m + 1):
        up = (n - i) * lam
        down = 0.0 if i == 0 else (i * mu if repair == "parallel" else mu)
        a[i, i] = up + down
        if i + 1 <= m:
            a[i, i + 1] = -up
        if i > 0:
            a[i, i - 1] = -down
    return float(np.linalg.solve(a, np.ones(m + 1))[0])


def group_loss_rate_per_hour(
    k: int, m: int, node_failure_rate_per_hour: float, repair_hours: float, repair: str = "parallel"
) -> float:
    """Loss rate of one placement group: 1 / MTTDL."""
    return 1.0 / group_mttdl_hours(k, m, node_failure_rate_per_hour, repair_hours, repair)


# --------------------------------------------------------------------------- fleet


def concurrent_failure_rate_per_hour(
    n_nodes: int, m: int, node_failure_rate_per_hour: float, repair_hours: float
) -> float:
    """Rate of events "a node fails while m other nodes of the fleet are inside their repair window".

        rate ~= N lambda * C(N-1, m) * (lambda T)^m = (m+1) C(N, m+1) lambda^(m+1) T^m

    (lambda T = probability that a given node is inside a repair window at a random instant.)
    For N = k+m this equals the parallel-repair group loss rate.
    """
    if n_nodes < m + 1:
        raise ValueError(f"need at least m+1 = {m + 1} nodes, got {n_nodes}")
    lam, t = node_failure_rate_per_hour, repair_hours
    return n_nodes * lam * math.comb(n_nodes - 1, m) * (lam * t) ** m


def placement_coverage(n_nodes: int, k: int, m: int, objects: float, placement: str = "random") -> float:
    """Probability that a given set of m+1 nodes holds m+1 fragments of at least one object.

    "random": each object's k+m nodes are an independent uniform draw (what HRW placement
    approximates), so one object covers a given (m+1)-set with p = C(n, m+1) / C(N, m+1) and
    coverage = 1 - (1 - p)^objects. "all": every (m+1)-set covered (objects -> infinity).
    "partitioned": nodes split into floor(N/n) fixed groups (copysets of Cidon et al.),
    coverage = floor(N/n) * C(n, m+1) / C(N, m+1).
    """
    n = k + m
    if n_nodes < n:
        raise ValueError(f"a {k}+{m} code needs at least {n} nodes, got {n_nodes}")
    if objects < 0:
        raise ValueError("objects must be >= 0")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if objects == 0:
        return 0.0
    p = math.comb(n, m + 1) / math.comb(n_nodes, m + 1)
    if placement == "all":
        return 1.0
    if placement == "partitioned":
        return min(1.0, (n_nodes // n) * p)
    return -math.expm1(objects * math.log1p(-p)) if p < 1 else 1.0


def fleet_loss_rate_per_hour(
    n_nodes: int,
    k: int,
    m: int,
    node_failure_rate_per_hour: float,
    repair_hours: float,
    objects: float,
    placement: str = "random",
) -> float:
    """Rate of data-loss events on the fleet: concurrent (m+1)-failure rate x placement coverage."""
    _check(k, m, node_failure_rate_per_hour, repair_hours)
    return concurrent_failure_rate_per_hour(n_nodes, m, node_failure_rate_per_hour, repair_hours) * placement_coverage(
        n_nodes, k, m, objects, placement
    )


def loss_probability_per_year(
    n_nodes: int,
    k: int,
    m: int,
    node_failure_rate_per_hour: float,
    repair_hours: float,
    objects: float,
    placement: str = "random",
) -> float:
    """Annual probability that the fleet loses at least one object: 1 - exp(-rate * 8760)."""
    return annual_probability(
        fleet_loss_rate_per_hour(n_nodes, k, m, node_failure_rate_per_hour, repair_hours, objects, placement)
    )


def _check(k: int, m: int, lam: float, repair_hours: float) -> None:
    if k < 1 or m < 0:
        raise ValueError(f"need k >= 1 and m >= 0, got {k}+{m}")
    if lam < 0 or repair_hours <= 0:
        raise ValueError("failure rate must be >= 0 and repair_hours > 0")


# --------------------------------------------------------------------------- Monte Carlo (for tests)


def simulate_group_mttdl_hours(
    n: int, m: int, node_failure_rate_per_hour: float, repair_hours: float, trials: int, seed: int = 0
) -> float:
    """Monte Carlo MTTDL of one group of n nodes with *deterministic* repair windows of repair_hours.

    Each node alternates up (exponential, rate lambda) and down (exactly T); data is lost when a
    node fails while m others are down. Returns the mean time to loss over ``trials`` runs.
    """
    rng = np.random.default_rng(seed)
    lam, t_rep = node_failure_rate_per_hour, repair_hours
    total = 0.0
    for _ in range(trials):
        next_fail = rng.exponential(1.0 / lam, size=n)
        down_until = np.full(n, -math.inf)
        while True:
            j = int(np.argmin(next_fail))
            now = float(next_fail[j])
            if int(np.count_nonzero(down_until > now)) >= m:
                total += now
                break
            down_until[j] = now + t_rep
            next_fail[j] = now + t_rep + rng.exponential(1.0 / lam)
    return total / trials


# --------------------------------------------------------------------------- table / CLI


def sensitivity_rows(
    n_nodes: int,
    repair_hours: float,
    objects: float,
    afrs: Sequence[float],
    window_factors: Sequence[float],
    schemes: Sequence[tuple[int, int]] = SCHEMES,
    placement: str = "random",
) -> list[dict[str, float | str]]:
    """One row per scheme, AFR and repair window (the measured one times each factor), for :func:`format_table`.

    Each row holds the annual loss probability of one object's group, of the whole fleet if every set
    of nodes held an object ("all"), the placement's coverage, and the fleet's probability and nines
    under ``placement``.
    """
    rows: list[dict[str, float | str]] = []
    for k, m in schemes:
        for afr in afrs:
            lam = afr_to_hourly_rate(afr)
            for factor in window_factors:
                t = repair_hours * factor
                group_p = annual_probability(group_loss_rate_per_hour(k, m, lam, t))
                worst_p = loss_probability_per_year(n_nodes, k, m, lam, t, objects, "all")
                fleet_p = loss_probability_per_year(n_nodes, k, m, lam, t, objects, placement)
                rows.append(
                    {
                        "scheme": f"{k}+{m}",
                        "afr": afr,
                        "factor": factor,
                        "window_h": t,
                        "group_p": group_p,
                        "coverage": placement_coverage(n_nodes, k, m, objects, placement),
                        "worst_p": worst_p,
                        "fleet_p": fleet_p,
                        "nines": nines(fleet_p),
                    }
                )
    return rows


def format_table(rows: list[dict[str, float | str]]) -> str:
    """The rows of :func:`sensitivity_rows` as a fixed-width text table with a two-line header."""
    head = (
        f"{'scheme':<6} {'AFR':>5} {'window':>13} {'P/yr':>9} {'nines':>5} {'P/yr fleet':>10} "
        f"{'coverage':>8} {'P/yr fleet':>10} {'nines':>5}"
    )
    sub = f"{'':<6} {'':>5} {'':>13} {'1 object':>9} {'obj':>5} {'all sets':>10} {'':>8} {'objects':>10} {'fleet':>5}"
    lines = [head, sub, "-" * len(head)]
    for r in rows:
        factor = "meas" if r["factor"] == 1 else f"{r['factor']:g}x"
        window = f"{r['window_h']:.2f}h ({factor})"
        lines.append(
            f"{r['scheme']:<6} {r['afr']:>5.1%} {window:>13} {r['group_p']:>9.2e} "
            f"{nines(float(r['group_p'])):>5.1f} {r['worst_p']:>10.2e} {r['coverage']:>8.3g} "
            f"{r['fleet_p']:>10.2e} {r['nines']:>5.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and print the durability figures and the sensitivity table; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument(
        "--repair-hours",
        type=float,
        default=None,
        help="measured repair window (out-interval included); or give --repair-mbps",
    )
    parser.add_argument(
        "--repair-mbps", type=float, default=None, help="measured rebuild rate, MB/s (from `hcstore bench --repair`)"
    )
    parser.add_argument("--node-tb", type=float, default=2.0, help="fragment data per node, TB")
    parser.add_argument(
        "--parallelism",
        type=float,
        default=1.0,
        help="concurrent rebuild streams at --repair-mbps each (1 = conservative)",
    )
    parser.add_argument("--out-interval-minutes", type=float, default=10.0)
    parser.add_argument("--afr", type=float, default=0.02, help="annual permanent node-data-loss rate")
    parser.add_argument("--objects", type=float, default=1e7, help="objects (placement groups) on the fleet")
    parser.add_argument("--placement", default="random", choices=PLACEMENTS)
    parser.add_argument("--sensitivity-afr", type=float, nargs="+", default=[0.005, 0.02, 0.10])
    parser.add_argument("--window-factors", type=float, nargs="+", default=[1.0, 2.0, 10.0])
    args = parser.parse_args(argv)

    if args.repair_hours is not None:
        window = args.repair_hours
        source = f"--repair-hours {window:g} (given)"
    elif args.repair_mbps is not None:
        window = repair_window_hours(args.node_tb, args.repair_mbps, args.out_interval_minutes, args.parallelism)
        source = (
            f"{args.out_interval_minutes:g} min out-interval + {args.node_tb:g} TB / "
            f"({args.repair_mbps:g} MB/s x {args.parallelism:g})"
        )
    else:
        parser.error("give the measured --repair-hours, or --repair-mbps (with --node-tb)")

    afrs = sorted(set(args.sensitivity_afr) | {args.afr})
    print(
        f"fleet: {args.nodes} nodes, {args.objects:.3g} objects, placement={args.placement}, "
        "parallel repair, independent failures"
    )
    print(f"repair window: {window:.3f} h = {source}")
    lam = afr_to_hourly_rate(args.afr)
    print(
        f"default AFR {args.afr:.1%}/node-year -> lambda = {lam:.3e}/node-hour; "
        f"nodes inside a repair window on average: {args.nodes * lam * window:.2e}"
    )
    print()
    print(
        format_table(
            sensitivity_rows(args.nodes, window, args.objects, afrs, args.window_factors, placement=args.placement)
        )
    )
    print()
    print(
        "1 object: one object's k+m placement group (S3-style per-object durability). "
        "all sets: fleet, every (m+1)-node set\nholds some object (objects -> inf). coverage: share of "
        "(m+1)-node sets holding m+1 fragments of one object.\nobjects: fleet with --objects objects; "
        "P/yr = annual probability of losing at least one object."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
