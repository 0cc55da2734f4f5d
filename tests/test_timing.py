"""The one definition of step time, samples/s and the training job's timed window (meltr/train/timing.py)."""
from __future__ import annotations

import math

import pytest

from meltr.train.timing import median_or_none, training_window, window_stats


def test_window_stats_is_samples_over_the_summed_time_with_median_and_iqr():
    s = window_stats([100.0, 100.0, 100.0, 300.0], samples_per_step=8)
    assert s["samples_per_s"] == pytest.approx(4 * 8 / 0.6)  # a slow step counts as long as it took
    assert s["step_ms"] == 100.0 and s["step_ms_iqr"] == pytest.approx(50.0) and s["step_ms_mean"] == 150.0
    assert s["steps_timed"] == 4
    empty = window_stats([], 8)
    assert empty["steps_timed"] == 0 and math.isnan(empty["samples_per_s"])


def test_the_training_window_skips_warm_up_and_keeps_whole_meta_intervals():
    steps = [(float(i), 5.0 if i % 3 == 0 else None) for i in range(1, 21)]  # 20 steps, a meta step every 3
    window = training_window(steps, warmup=4, period=3)
    assert len(window) == 15 and window[0][0] == 6.0 and window[-1][0] == 20.0  # the last 15 of 16
    assert sum(m is not None for _, m in window) == 5  # every interval holds one meta step
    assert len(training_window(steps, warmup=4, period=1)) == 16


def test_a_short_run_keeps_what_it_has():
    steps = [(1.0, None), (2.0, None)]
    assert training_window(steps, warmup=10, period=3) == steps  # fewer steps than the warm-up: all of them
    assert median_or_none([]) is None and median_or_none([3.0, 1.0, 2.0]) == 2.0
