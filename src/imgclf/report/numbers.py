"""Numbers as the reports and the command line write them: percentages, points, durations, counts."""

from __future__ import annotations


def pct(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def points(x) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} pts"


def seconds(x) -> str:
    if x is None:
        return "n/a"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{x:.1f} s" if x >= 1 else f"{x * 1000:.0f} ms"


def count(n) -> str:
    return "n/a" if n is None else f"{int(n):,}"
