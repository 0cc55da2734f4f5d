"""retrieval_metrics: hand-checked matrices, tie handling, and agreement with CLIP4Clip's formula."""
import numpy as np
import pytest

from meltr.metrics import retrieval_metrics


def clip4clip_compute_metrics(x):
    """CLIP4Clip metrics.py::compute_metrics, verbatim apart from names (valid only without ties)."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {
        "R1": float(np.sum(ind == 0)) * 100 / len(ind),
        "R5": float(np.sum(ind < 5)) * 100 / len(ind),
        "R10": float(np.sum(ind < 10)) * 100 / len(ind),
        "MedR": np.median(ind) + 1,
        "MeanR": np.mean(ind) + 1,
    }


def matrix_with_ranks(ranks):
    """A tie-free square matrix whose row i puts the ground truth at 0-based rank ranks[i]."""
    n = len(ranks)
    sim = np.zeros((n, n))
    for i, r in enumerate(ranks):
        others = [j for j in range(n) if j != i]
        order = others[:r] + [i] + others[r:]  # columns from best to worst
        for pos, j in enumerate(order):
            sim[i, j] = n - pos
    return sim


def test_identity_is_perfect():
    m = retrieval_metrics(np.eye(5))
    assert m == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MedR": 1.0, "MeanR": 1.0}
    assert all(type(v) is float for v in m.values())


def test_known_ranks_0_to_3():
    sim = matrix_with_ranks([0, 1, 2, 3])
    m = retrieval_metrics(sim)
    assert m["R1"] == 25.0
    assert m["R5"] == 100.0 and m["R10"] == 100.0
    assert m["MedR"] == 2.5  # np.median of 0,1,2,3 is 1.5, + 1
    assert m["MeanR"] == 2.5
    assert retrieval_metrics(sim, ties="pessimistic") == m  # no ties: both agree


def test_hand_written_4x4():
    sim = np.array([
        [0.9, 0.1, 0.2, 0.3],  # GT best -> rank 0
        [0.8, 0.5, 0.1, 0.0],  # one above -> rank 1
        [0.7, 0.6, 0.2, 0.1],  # two above -> rank 2
        [0.9, 0.8, 0.7, 0.1],  # three above -> rank 3
    ])
    m = retrieval_metrics(sim)
    assert (m["R1"], m["R5"], m["MedR"], m["MeanR"]) == (25.0, 100.0, 2.5, 2.5)


def test_reversed_ordering_is_worst():
    n = 12
    m = retrieval_metrics(-np.eye(n))  # GT is the unique minimum of each row: rank n-1
    assert m["R1"] == 0.0 and m["R5"] == 0.0 and m["R10"] == 0.0
    assert m["MedR"] == n and m["MeanR"] == n


def test_r5_r10_boundaries():
    sim = matrix_with_ranks([4, 5, 9, 10, 0, 0, 0, 0, 0, 0, 0, 0])  # rank 4 counts for R@5, 5 does not
    m = retrieval_metrics(sim)
    assert m["R5"] == pytest.approx(100 * 9 / 12)
    assert m["R10"] == pytest.approx(100 * 11 / 12)
    assert m["MedR"] == 1.0


def test_all_ties_optimistic_and_pessimistic():
    sim = np.zeros((4, 4))
    opt = retrieval_metrics(sim)
    assert opt == {"R1": 100.0, "R5": 100.0, "R10": 100.0, "MedR": 1.0, "MeanR": 1.0}
    pes = retrieval_metrics(sim, ties="pessimistic")
    assert pes["R1"] == 0.0 and pes["R5"] == 100.0
    assert pes["MedR"] == 4.0 and pes["MeanR"] == 4.0


def test_mixed_ties_by_hand():
    sim = np.array([
        [1.0, 1.0, 0.0, 0.0],  # GT ties one other:            opt 0, pes 1
        [2.0, 1.0, 1.0, 1.0],  # one above, two tied:          opt 1, pes 3
        [0.0, 0.0, 0.5, 0.1],  # GT strictly best:             opt 0, pes 0
        [3.0, 0.2, 0.2, 0.2],  # one above, two tied:          opt 1, pes 3
    ])
    opt = retrieval_metrics(sim)
    assert opt == {"R1": 50.0, "R5": 100.0, "R10": 100.0, "MedR": 1.5, "MeanR": 1.5}
    pes = retrieval_metrics(sim, ties="pessimistic")
    assert pes["R1"] == 25.0 and pes["R5"] == 100.0
    assert pes["MedR"] == 3.0  # median of 0,1,3,3 = 2, + 1
    assert pes["MeanR"] == pytest.approx(1 + 7 / 4)


def test_original_formula_breaks_on_ties_but_ours_does_not():
    # datasets.md §6.1: CLIP4Clip gives R@1 = 25 over 16 "ranks" for all-zeros; ours counts 4 ranks.
    assert clip4clip_compute_metrics(np.zeros((4, 4)))["R1"] == 25.0
    assert retrieval_metrics(np.zeros((4, 4)))["R1"] == 100.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [1, 7, 60, 100])
def test_agrees_with_clip4clip_without_ties(seed, n):
    rng = np.random.default_rng(seed)
    sim = rng.standard_normal((n, n)) + 2.0 * np.eye(n)  # continuous: ties have probability 0
    ours, theirs = retrieval_metrics(sim), clip4clip_compute_metrics(sim)
    for key in theirs:
        assert ours[key] == pytest.approx(theirs[key]), key
    assert retrieval_metrics(sim, ties="pessimistic") == ours
    # Video-to-text is the same function on the transpose.
    v2t = retrieval_metrics(sim.T)
    for key, value in clip4clip_compute_metrics(sim.T).items():
        assert v2t[key] == pytest.approx(value)


def test_float32_and_lists_accepted():
    assert retrieval_metrics(np.eye(3, dtype=np.float32))["R1"] == 100.0
    assert retrieval_metrics([[1, 0], [0, 1]])["MeanR"] == 1.0


@pytest.mark.parametrize("bad, match", [
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN/inf"),
    (np.ones((3, 4)), "square"),
    (np.ones(4), "2-D"),
    (np.ones((2, 2, 2)), "2-D"),
    (np.zeros((0, 0)), "non-empty"),
])
def test_bad_input_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(bad)


def test_unknown_ties_mode_raises():
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(np.eye(2), ties="random")
