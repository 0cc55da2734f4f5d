"""Video QA metrics: accuracy (multiple-choice and open-ended) and TGIF Count MSE (datasets.md §6.2-6.4)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import MeltrError

OUT_OF_VOCABULARY = ("wrong", "exclude")


def _same_ids(where: str, predictions: dict, answers: dict) -> None:
    if not isinstance(predictions, dict) or not isinstance(answers, dict):
        raise MeltrError(f"{where}: expected predictions and answers as dicts keyed by id")
    if not answers:
        raise MeltrError(f"{where}: expected at least one answer, got none")
    extra = next((k for k in predictions if k not in answers), None)
    if extra is not None:
        raise MeltrError(f"{where}: prediction id {extra!r} has no answer")
    missing = next((k for k in answers if k not in predictions), None)
    if missing is not None:
        raise MeltrError(f"{where}: answer id {missing!r} has no prediction")


def qa_accuracy(predictions: dict[str, object], answers: dict[str, object], *,
                vocabulary: set | None = None, out_of_vocabulary: str = "wrong") -> dict:
    """Accuracy in percent of `predictions[id] == answers[id]` (no normalisation of strings).

    Multiple-choice: answers are option indices (int). Open-ended (FrameQA): answers are strings and
    `vocabulary` is the training answer set; a test answer outside it is out of vocabulary (OOV):
      "wrong"   (default, strict, like the original TGIF-QA protocol): it counts as wrong, the
                denominator is every question. A classifier over the vocabulary can never output it.
      "exclude" (All-in-one, label -100): it is dropped from the denominator, which inflates accuracy.
    Returns {"accuracy": percent, "n": denominator, "n_out_of_vocabulary": int, "out_of_vocabulary": mode}.
    """
    where = "qa_accuracy"
    if out_of_vocabulary not in OUT_OF_VOCABULARY:
        raise MeltrError(f"{where}: out_of_vocabulary must be one of {OUT_OF_VOCABULARY}, got {out_of_vocabulary!r}")
    _same_ids(where, predictions, answers)
    correct = n_oov = 0
    for k, ans in answers.items():
        pred = predictions[k]
        # "3" vs 3 would silently never match and give 0% accuracy.
        if isinstance(pred, str) != isinstance(ans, str):
            raise MeltrError(f"{where}: id {k!r}: prediction {pred!r} and answer {ans!r} are not both strings "
                             "(open-ended) or both indices (multiple-choice)")
        if vocabulary is not None and ans not in vocabulary:
            n_oov += 1
        else:
            correct += int(pred == ans)
    n = len(answers) - (n_oov if out_of_vocabulary == "exclude" else 0)
    if n == 0:
        raise MeltrError(f"{where}: all {n_oov} answers are out of vocabulary, nothing left to score")
    return {"accuracy": 100.0 * correct / n, "n": n, "n_out_of_vocabulary": n_oov,
            "out_of_vocabulary": out_of_vocabulary}


def chance_p_value(correct: int, n: int, chance: float) -> float:
    """One-sided exact binomial test: the probability of at least `correct` right answers out of `n` when each
    is right with probability `chance` (guessing). Small values mean the accuracy is clearly above chance
    (with 100 five-way questions: 30 right gives 0.011, 35 gives 0.0003). scipy.stats.binomtest, exact for
    real test sets too (TVQA val: 15,253 questions)."""
    from scipy.stats import binomtest

    where = "chance_p_value"
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MeltrError(f"{where}: expected n >= 1 questions, got {n!r}")
    if isinstance(correct, bool) or not isinstance(correct, int) or not 0 <= correct <= n:
        raise MeltrError(f"{where}: expected 0 <= correct <= n = {n}, got {correct!r}")
    if not 0 < chance < 1:
        raise MeltrError(f"{where}: expected a chance level strictly between 0 and 1, got {chance!r}")
    return min(1.0, float(binomtest(correct, n, chance, alternative="greater").pvalue))


def count_mse(predictions: dict[str, float], answers: dict[str, int], *,
              clip: tuple[float, float] = (1, 10)) -> dict:
    """TGIF-QA Count: MSE of `clip(round(prediction), *clip)` against the ground truth (lower is better).

    As TGIF-QA's count_base.py (`tf.clip_by_value(tf.round(logits), 1, 10)`). `np.round` rounds half to
    even (2.5 -> 2, 3.5 -> 4), exactly as `tf.round` does. The ground truth is not clipped: it holds 0s,
    which therefore add at least 1 each. Returns {"MSE": float, "n": int}.
    """
    where = "count_mse"
    _same_ids(where, predictions, answers)
    lo, hi = clip
    if not lo <= hi:
        raise MeltrError(f"{where}: expected clip=(low, high) with low <= high, got {clip!r}")
    keys = list(answers)
    for name, values in (("prediction", predictions), ("answer", answers)):
        for k in keys:
            v = values[k]
            if isinstance(v, (bool, str)) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
                raise MeltrError(f"{where}: id {k!r}: expected a finite number as {name}, got {v!r}")
    pred = np.clip(np.round(np.array([predictions[k] for k in keys], dtype=np.float64)), lo, hi)
    gt = np.array([answers[k] for k in keys], dtype=np.float64)
    return {"MSE": float(np.mean((pred - gt) ** 2)), "n": len(keys)}
