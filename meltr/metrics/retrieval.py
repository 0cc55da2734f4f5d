"""Text-to-video retrieval metrics from a similarity matrix (datasets.md §6.1).

Ported from CLIP4Clip's `metrics.py::compute_metrics`, with one fix: the original finds the rank of the
ground truth with `np.where(sort(-sim) - diag == 0)`, which returns several hits per row when a row holds a
value equal to its diagonal, so every metric is silently wrong (an all-zeros 4x4 matrix gives R@1 = 25% over
16 "ranks"). Here the rank is counted instead, so ties cannot change the number of ranks.
"""
from __future__ import annotations

import numpy as np

TIES = ("optimistic", "pessimistic")


def _gt_ranks(sim: np.ndarray, ties: str) -> np.ndarray:
    """0-based rank of the ground truth (the diagonal) in each row."""
    diag = np.diag(sim)[:, None]
    if ties == "optimistic":
        # Entries strictly better than the GT: a tie counts in the GT's favour.
        return (sim > diag).sum(axis=1)
    # Every OTHER entry at least as good as the GT; the `- 1` removes the diagonal itself.
    return (sim >= diag).sum(axis=1) - 1


def _check(sim: np.ndarray) -> None:
    if sim.ndim != 2:
        raise ValueError(f"retrieval_metrics: expected a 2-D similarity matrix, got shape {sim.shape}")
    if sim.size == 0:
        raise ValueError(f"retrieval_metrics: expected a non-empty similarity matrix, got shape {sim.shape}")
    if sim.shape[0] != sim.shape[1]:
        raise ValueError(
            "retrieval_metrics: expected a square matrix (n_text == n_video, ground truth of row i in "
            f"column i), got shape {sim.shape}"
        )
    if not np.isfinite(sim).all():
        bad = int((~np.isfinite(sim)).sum())
        raise ValueError(f"retrieval_metrics: expected finite similarities, got {bad} NaN/inf value(s)")


def retrieval_metrics(sim: np.ndarray, ties: str = "optimistic") -> dict:
    """Retrieval metrics for `sim[n_text, n_video]`, the ground truth of row i being column i.

    Returns floats: `R1`, `R5`, `R10` in percent (0-100), `MedR` (= np.median(rank) + 1, so it can be
    x.5 for an even count) and `MeanR` (= mean(rank) + 1), rank being the 0-based rank of the GT.

    ties: "optimistic" ranks the GT above every entry equal to it (rank = number of entries strictly
    greater than the diagonal); identical to CLIP4Clip when a row has no ties. "pessimistic" ranks it
    below them (rank = number of other entries >= the diagonal).

    Video-to-text retrieval is the same function on `sim.T`.

    Raises ValueError for input that is not 2-D, not square, empty, or holds NaN/inf.
    """
    if ties not in TIES:
        raise ValueError(f"retrieval_metrics: ties must be one of {TIES}, got {ties!r}")
    try:
        # float64 holds every float32/int value exactly, so ties are kept as they were.
        sim = np.asarray(sim, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("retrieval_metrics: expected a numeric similarity matrix") from None
    _check(sim)
    rank = _gt_ranks(sim, ties)
    return {
        "R1": float(100.0 * np.mean(rank < 1)),
        "R5": float(100.0 * np.mean(rank < 5)),
        "R10": float(100.0 * np.mean(rank < 10)),
        "MedR": float(np.median(rank) + 1),
        "MeanR": float(np.mean(rank) + 1),
    }
