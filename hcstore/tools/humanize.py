"""Human-readable sizes and rates for CLI output."""

from __future__ import annotations


def size(nbytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def rate(nbytes: float, seconds: float) -> str:
    """Bytes over seconds as MB/s (decimal, as disks and networks are quoted)."""
    return f"{nbytes / max(seconds, 1e-9) / 1e6:,.0f} MB/s"
