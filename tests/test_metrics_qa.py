"""qa_accuracy and count_mse: hand-computed numbers, OOV conventions, rounding/clipping, input checks."""
import numpy as np
import pytest

from meltr.errors import MeltrError
import math

from meltr.metrics import chance_p_value, count_mse, qa_accuracy

# FrameQA-like: q4's answer "zebra" is not in the training vocabulary.
VOCAB = {"dog", "red", "three", "car", "cat"}
OE_ANSWERS = {"q1": "dog", "q2": "red", "q3": "three", "q4": "zebra", "q5": "car"}
OE_PREDS = {"q1": "dog", "q2": "blue", "q3": "three", "q4": "cat", "q5": "car"}


def test_multiple_choice_accuracy():
    answers = {"a": 0, "b": 3, "c": 2, "d": 1}
    preds = {"a": np.int64(0), "b": 3, "c": 4, "d": 1}  # argmax output may be numpy ints
    assert qa_accuracy(preds, answers) == {
        "accuracy": 75.0, "n": 4, "n_out_of_vocabulary": 0, "out_of_vocabulary": "wrong"}


def test_open_ended_oov_counts_wrong_by_default():
    # 3 of the 4 in-vocabulary answers are right; the OOV one is wrong and stays in the denominator: 3/5.
    r = qa_accuracy(OE_PREDS, OE_ANSWERS, vocabulary=VOCAB)
    assert r == {"accuracy": 60.0, "n": 5, "n_out_of_vocabulary": 1, "out_of_vocabulary": "wrong"}


def test_open_ended_oov_excluded_like_all_in_one():
    r = qa_accuracy(OE_PREDS, OE_ANSWERS, vocabulary=VOCAB, out_of_vocabulary="exclude")
    assert r == {"accuracy": 75.0, "n": 4, "n_out_of_vocabulary": 1, "out_of_vocabulary": "exclude"}


def test_oov_answer_is_wrong_even_if_predicted():
    preds = dict(OE_PREDS, q4="zebra")
    assert qa_accuracy(preds, OE_ANSWERS, vocabulary=VOCAB)["accuracy"] == 60.0
    assert qa_accuracy(preds, OE_ANSWERS, vocabulary=VOCAB, out_of_vocabulary="exclude")["accuracy"] == 75.0
    # Without a vocabulary nothing is OOV and it is an ordinary hit: 4/5.
    assert qa_accuracy(preds, OE_ANSWERS) == {
        "accuracy": 80.0, "n": 5, "n_out_of_vocabulary": 0, "out_of_vocabulary": "wrong"}


@pytest.mark.parametrize("preds, answers, kwargs, msg", [
    ({"a": 1}, {"a": 1}, {"out_of_vocabulary": "ignore"}, "must be one of"),
    ({"a": 1, "x": 2}, {"a": 1}, {}, "prediction id 'x' has no answer"),
    ({"a": 1}, {"a": 1, "b": 0}, {}, "answer id 'b' has no prediction"),
    ({}, {}, {}, "at least one answer"),
    ({"a": "3"}, {"a": 3}, {}, "not both strings"),
    ({"a": "zebra"}, {"a": "zebra"}, {"vocabulary": {"dog"}, "out_of_vocabulary": "exclude"},
     "all 1 answers are out of vocabulary"),
])
def test_qa_bad_input(preds, answers, kwargs, msg):
    with pytest.raises(MeltrError, match=msg) as err:
        qa_accuracy(preds, answers, **kwargs)
    assert "\n" not in str(err.value)


PREDS = {"a": 2.5, "b": 3.5, "c": 0.2, "d": 12.7, "e": 4.4, "f": -3.0}
GT = {"a": 2, "b": 4, "c": 0, "d": 10, "e": 5, "f": 1}


def test_count_mse_rounds_half_even_then_clips():
    # round: 2, 4 (half to even), 0, 13, 4, -3 -> clip to [1, 10]: 2, 4, 1, 10, 4, 1.
    # squared errors vs 2, 4, 0, 10, 5, 1: 0, 0, 1 (the gt 0 is not clipped), 0, 1, 0 -> 2/6.
    assert count_mse(PREDS, GT) == {"MSE": pytest.approx(2 / 6), "n": 6}


def test_count_mse_clip_range_is_configurable():
    # clip to [0, 5]: 2, 4, 0, 5, 4, 0 -> squared errors 0, 0, 0, 25, 1, 1 -> 27/6.
    assert count_mse(PREDS, GT, clip=(0, 5))["MSE"] == pytest.approx(27 / 6)


@pytest.mark.parametrize("preds, answers, kwargs, msg", [
    ({"a": float("nan")}, {"a": 1}, {}, "finite number as prediction"),
    ({"a": "2"}, {"a": 1}, {}, "finite number as prediction"),
    ({"a": 2.0}, {"a": None}, {}, "finite number as answer"),
    ({"a": 2.0}, {"a": 1}, {"clip": (10, 1)}, "low <= high"),
    ({"a": 2.0}, {"b": 1}, {}, "prediction id 'a' has no answer"),
])
def test_count_bad_input(preds, answers, kwargs, msg):
    with pytest.raises(MeltrError, match=msg):
        count_mse(preds, answers, **kwargs)


def test_chance_p_value_is_the_binomial_tail():
    # 3 of 4 two-way questions right by guessing: (C(4,3) + C(4,4)) / 2^4 = 5/16
    assert chance_p_value(3, 4, 0.5) == pytest.approx(5 / 16, rel=1e-12)
    assert chance_p_value(0, 7, 0.2) == pytest.approx(1.0)
    # all n right: chance^n; the tail at 30 of 100 five-way questions, summed by hand term by term
    assert chance_p_value(5, 5, 0.2) == pytest.approx(0.2 ** 5, rel=1e-12)
    by_hand = sum(math.comb(100, k) * 0.2 ** k * 0.8 ** (100 - k) for k in range(30, 101))
    assert chance_p_value(30, 100, 0.2) == pytest.approx(by_hand, rel=1e-9)
    assert 0.011 < by_hand < 0.012
    # real test-set sizes (TVQA val): no overflow or underflow to nonsense
    # (mean 3050.6, sd 49.4): the mean is the median, 5 sd above it about 3e-7 (normal tail 2.9e-7)
    assert 0.45 < chance_p_value(3051, 15253, 0.2) < 0.55
    assert 1e-7 < chance_p_value(3298, 15253, 0.2) < 1e-6 and 0 < chance_p_value(4000, 15253, 0.2) < 1e-60


@pytest.mark.parametrize("args, msg", [
    ((5, 4, 0.2), "0 <= correct <= n"), ((-1, 4, 0.2), "0 <= correct <= n"), ((1, 0, 0.2), "n >= 1"),
    ((1, 4, 1.0), "strictly between 0 and 1"), ((1.5, 4, 0.2), "0 <= correct <= n"),
])
def test_chance_p_value_rejects_bad_input(args, msg):
    with pytest.raises(MeltrError, match=msg):
        chance_p_value(*args)
