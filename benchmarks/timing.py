"""Shared by the benchmarks: the paired-ratio summary of interleaved timings."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int, *, warmup: int = 3,
                sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each contender: `warmup` calls each, then `rounds` rounds that run every
    contender once, in an order that alternates round by round (ABBA), so drifts in machine
    speed hit all alike. `sync` waits for the device (torch.cuda.synchronize) around each call."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            sync()
            start = time.perf_counter()
            contenders[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def paired(a: list[float], b: list[float]) -> str:
    """Median of the per-round ratios a/b with their interquartile range: machine drift between
    rounds hits both contenders of a round alike, so it cancels in the ratio."""
    ratios = sorted(x / y for x, y in zip(a, b, strict=True))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return f"{statistics.median(ratios):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})"
