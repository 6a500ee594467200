"""Shared by the benchmark scripts: latency percentiles and the machine a run was on."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

import facetrust


def percentiles(seconds: list[float], decimals: int | None = 3) -> dict[str, float]:
    """p50 and p99 of ``seconds`` in milliseconds, rounded to ``decimals`` (None: not rounded)."""
    ms = np.asarray(seconds) * 1e3
    values = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    if decimals is None:
        return values
    return {name: round(value, decimals) for name, value in values.items()}


def machine(**extra: Any) -> dict[str, Any]:
    """The Python, cores, platform and facetrust version of this run (with ``extra``)."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "facetrust": facetrust.__version__,
        **extra,
    }
