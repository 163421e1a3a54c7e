"""Shared by the benchmarks: the paired-ratio summary of interleaved timings."""

from __future__ import annotations

import statistics


def paired(a: list[float], b: list[float]) -> str:
    """Median of the per-round ratios a/b with their interquartile range: machine drift between
    rounds hits both contenders of a round alike, so it cancels in the ratio."""
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return f"{statistics.median(ratios):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})"
