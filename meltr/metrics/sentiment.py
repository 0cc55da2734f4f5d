"""CMU-MOSI sentiment metrics on a regression output against labels in [-3, 3] (datasets.md §6.6), as MMSA's
metricsTop.py and MulT's eval_metrics.py compute them:

    MAE     mean |pred - y|
    Corr    Pearson correlation of pred and y
    Acc-7   round(clip(pred, -3, 3)) == round(clip(y, -3, 3));  Acc-5 the same clipped to [-2, 2]
    Acc-2 and F1 in the literature's conventions (the papers rarely say which; all are reported):
      non0  MMSA "Non0", the most common in recent papers: samples with y == 0 dropped, pred > 0 vs y > 0
      has0  MMSA "Has0": pred >= 0 vs y >= 0 on every sample
      mult  MulT's eval_mosi(exclude_zero=False): pred > 0 vs y > 0 on every sample (zero is negative)
    F1 is sklearn's f1_score(average="weighted") over the two classes, written out here.

Accuracies in percent; np.round rounds half to even, as the reference code's np.round does.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import MeltrError


def _checked(predictions: dict, labels: dict) -> tuple[np.ndarray, np.ndarray]:
    where = "sentiment_metrics"
    if not isinstance(predictions, dict) or not isinstance(labels, dict) or not labels:
        raise MeltrError(f"{where}: expected predictions and labels as non-empty dicts keyed by id")
    if set(predictions) != set(labels):
        odd = sorted(set(predictions) ^ set(labels), key=str)[0]
        raise MeltrError(f"{where}: id {odd!r} is in only one of predictions and labels")
    ids = sorted(labels, key=str)
    pred = np.array([predictions[i] for i in ids], dtype=np.float64)
    y = np.array([labels[i] for i in ids], dtype=np.float64)
    bad = next((i for i, p, t in zip(ids, pred, y) if not (math.isfinite(p) and math.isfinite(t))), None)
    if bad is not None:
        raise MeltrError(f"{where}: id {bad!r}: prediction {predictions[bad]!r} or label {labels[bad]!r} is not "
                         "finite; expected finite numbers")
    return pred, y


def weighted_f1(truth: np.ndarray, guess: np.ndarray) -> float:
    """sklearn's f1_score(truth, guess, average="weighted") for boolean classes: each class's F1 weighted by its
    share of the true labels (a class never predicted nor present contributes nothing)."""
    total = 0.0
    for cls in (True, False):
        tp = float(np.sum((guess == cls) & (truth == cls)))
        predicted, actual = float(np.sum(guess == cls)), float(np.sum(truth == cls))
        f1 = 2 * tp / (predicted + actual) if predicted + actual else 0.0
        total += f1 * actual
    return total / len(truth)


def sentiment_metrics(predictions: dict[str, float], labels: dict[str, float]) -> dict:
    pred, y = _checked(predictions, labels)
    out = {"n": int(len(y)), "MAE": float(np.mean(np.abs(pred - y)))}
    out["Corr"] = float(np.corrcoef(pred, y)[0, 1]) if len(y) > 1 and pred.std() > 0 and y.std() > 0 else 0.0
    for name, bound in (("Acc7", 3), ("Acc5", 2)):
        out[name] = 100.0 * float(np.mean(np.round(np.clip(pred, -bound, bound)) == np.round(np.clip(y, -bound, bound))))
    nonzero = y != 0
    conventions = {"non0": (pred[nonzero] > 0, y[nonzero] > 0), "has0": (pred >= 0, y >= 0), "mult": (pred > 0, y > 0)}
    for name, (guess, truth) in conventions.items():
        # None where the convention has no sample (non0 when every label is 0)
        out[f"Acc2_{name}"] = 100.0 * float(np.mean(guess == truth)) if len(truth) else None
        out[f"F1_{name}"] = 100.0 * weighted_f1(truth, guess) if len(truth) else None
    out["n_non0"] = int(nonzero.sum())
    return out
