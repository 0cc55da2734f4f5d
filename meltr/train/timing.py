"""What a list of step times means: the one definition of step time, its spread and samples/s.

Every throughput figure in the package (training jobs, `bench meltr-step`, `bench scaling`, the per-task cost
jobs) is `window_stats` of step times that exclude warm-up.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def window_stats(step_ms: Sequence[float], samples_per_step: int) -> dict:
    """step_ms: median step time; step_ms_iqr: its interquartile range; step_ms_mean; samples_per_s: the
    samples of every timed step over their summed time (so a slow step counts as long as it took)."""
    t = np.asarray(step_ms, dtype=float)
    if not len(t):
        return {"step_ms": math.nan, "step_ms_iqr": math.nan, "step_ms_mean": math.nan, "samples_per_s": math.nan,
                "steps_timed": 0}
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"step_ms": float(med), "step_ms_iqr": float(q3 - q1), "step_ms_mean": float(t.mean()),
            "samples_per_s": float(samples_per_step * len(t) / (t.sum() / 1e3)), "steps_timed": int(len(t))}


def median_or_none(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def training_window(steps: Sequence[tuple[float, float | None]], warmup: int, period: int
                    ) -> list[tuple[float, float | None]]:
    """The timed steps of a training job: (step_ms, meta_ms or None) of the steps this process ran, less its
    first `warmup`, cut to the last whole multiple of `period` (MELTR's k) so that every meta interval counts
    once; all of them when fewer than one period is left."""
    timed = list(steps[warmup:]) if len(steps) > warmup else list(steps)
    n = (len(timed) // period) * period
    return timed[-n:] if n else timed
