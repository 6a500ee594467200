"""Latency percentiles shared by the benchmark scripts."""

from __future__ import annotations

import numpy as np


def percentiles(seconds: list[float], decimals: int | None = 3) -> dict[str, float]:
    """p50 and p99 of ``seconds`` in milliseconds, rounded to ``decimals`` (None: not rounded)."""
    ms = np.asarray(seconds) * 1e3
    values = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    if decimals is None:
        return values
    return {name: round(value, decimals) for name, value in values.items()}
