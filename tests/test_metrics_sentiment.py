"""CMU-MOSI metrics (meltr/metrics/sentiment.py) against values computed by hand from MMSA's and MulT's rules."""
from __future__ import annotations

import math

import pytest

from meltr.errors import MeltrError
from meltr.metrics.sentiment import sentiment_metrics, weighted_f1

PRED = {"a": 2.4, "b": -0.6, "c": 0.0, "d": 1.2, "e": -2.6, "f": 0.3}
TRUE = {"a": 3.0, "b": -1.0, "c": 0.0, "d": -0.4, "e": -3.0, "f": 0.0}


def test_every_metric_by_hand():
    m = sentiment_metrics(PRED, TRUE)
    assert m["n"] == 6 and m["n_non0"] == 4
    assert m["MAE"] == pytest.approx((0.6 + 0.4 + 0 + 1.6 + 0.4 + 0.3) / 6)
    # Acc-7: rounded (2, -1, 0, 1, -3, 0) vs (3, -1, 0, 0, -3, 0): b, c, e, f agree
    assert m["Acc7"] == pytest.approx(100 * 4 / 6)
    # Acc-5 clips to +-2 first: (2, -1, 0, 1, -2, 0) vs (2, -1, 0, 0, -2, 0): all but d
    assert m["Acc5"] == pytest.approx(100 * 5 / 6)
    # non0 drops c and f: pred>0 (T, F, T, F) vs y>0 (T, F, F, F): 3 of 4
    assert m["Acc2_non0"] == pytest.approx(75.0)
    # weighted F1: positives F1 = 2*1/(2+1) = 2/3 (support 1), negatives F1 = 2*2/(2+3) = 0.8 (support 3)
    assert m["F1_non0"] == pytest.approx(100 * (2 / 3 * 1 + 0.8 * 3) / 4)
    # has0: pred>=0 (T, F, T, T, F, T) vs y>=0 (T, F, T, F, F, T): all but d
    assert m["Acc2_has0"] == pytest.approx(100 * 5 / 6)
    # mult: pred>0 (T, F, F, T, F, T) vs y>0 (T, F, F, F, F, F): a, b, c, e agree
    assert m["Acc2_mult"] == pytest.approx(100 * 4 / 6)
    xs, ys = list(PRED.values()), [TRUE[k] for k in PRED]
    mx, my = sum(xs) / 6, sum(ys) / 6
    corr = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(
        sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert m["Corr"] == pytest.approx(corr)


def test_weighted_f1_matches_sklearns_definition_on_edge_cases():
    import numpy as np

    t, g = np.array([True, True, False]), np.array([True, True, True])
    # positives F1 = 2*2/(3+2) = 0.8 (support 2); negatives never predicted: F1 0 (support 1)
    assert weighted_f1(t, g) == pytest.approx(0.8 * 2 / 3)
    assert weighted_f1(t, t) == pytest.approx(1.0)


def test_constant_predictions_and_all_zero_labels():
    m = sentiment_metrics({"a": 0.5, "b": 0.5}, {"a": 0.0, "b": 0.0})
    assert m["Corr"] == 0.0 and m["Acc2_non0"] is None and m["F1_non0"] is None and m["n_non0"] == 0


@pytest.mark.parametrize("pred, true, expected", [
    ({"a": 1.0}, {"b": 1.0}, "only one of predictions and labels"),
    ({"a": float("nan")}, {"a": 1.0}, "is not finite"),
    ({"a": 1.0}, {"a": float("-inf")}, "is not finite"),
    ({}, {}, "non-empty"),
])
def test_bad_input_is_one_line(pred, true, expected):
    with pytest.raises(MeltrError, match=expected):
        sentiment_metrics(pred, true)
