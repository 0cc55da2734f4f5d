"""caption_metrics: hand-computed values, agreement with the pycocoevalcap scorers, input checks, Java handling."""
import math
import shutil

import psutil
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from meltr.errors import MeltrError
from meltr.metrics import caption_metrics
from meltr.metrics.captioning import MeteorProcess

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")

REFS = {
    "v1": ["a man is playing a guitar on stage", "someone plays the guitar", "a musician performs a song"],
    "v2": ["a woman is slicing an onion", "a person cuts vegetables in a kitchen"],
    "v3": ["two dogs are running in a park", "dogs play on the grass"],
    "v4": ["a child rides a bike down the street"],
}
# Stray outer whitespace must be stripped away, as nlg-eval does.
HYPS = {"v1": " a man is playing guitar", "v2": "a woman is cutting an onion .\n",
        "v3": "dogs are running in the grass", "v4": "a kid is riding a bicycle "}
KEYS = ["BLEU1", "BLEU2", "BLEU3", "BLEU4", "METEOR", "ROUGE_L", "CIDEr"]


def java_children():
    return [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]


@pytest.fixture(scope="module")
def ours():
    """One METEOR JVM for the module's realistic corpus."""
    return caption_metrics(REFS, HYPS)


@pytest.fixture(scope="module")
def direct():
    """The scorers called by hand as nlg-eval calls them: stripped strings, no PTB tokenizer."""
    gts = {k: [r.strip() for r in v] for k, v in REFS.items()}
    res = {k: [HYPS[k].strip()] for k in REFS}
    meteor = Meteor()
    try:
        m = meteor.compute_score(gts, res)[0]
    finally:
        with meteor.meteor_p as proc:  # closes the pipes and reaps java
            proc.kill()
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    return {"BLEU1": bleu[0], "BLEU2": bleu[1], "BLEU3": bleu[2], "BLEU4": bleu[3], "METEOR": m,
            "ROUGE_L": Rouge().compute_score(gts, res)[0], "CIDEr": Cider().compute_score(gts, res)[0]}


@needs_java
def test_matches_pycocoevalcap_scorers(ours, direct):
    assert list(ours) == KEYS
    assert all(type(v) is float for v in ours.values())
    assert ours == {k: float(v) for k, v in direct.items()}
    assert 0 < ours["BLEU4"] < ours["BLEU1"] < 1 and 0 < ours["METEOR"] < 1 and ours["CIDEr"] > 0


@needs_java
def test_meteor_process_is_reaped(ours):
    assert java_children() == []


@needs_java
def test_one_meteor_process_scores_several_corpora_as_separate_ones(ours):
    # evaluate scores greedy and beam captions with one java; every EVAL line is scored on its own
    other = {"v1": "a guitar", "v2": "an onion is cut", "v3": "a park", "v4": "a bike in the street"}
    with MeteorProcess() as java:
        shared = [caption_metrics(REFS, HYPS, meteor=java), caption_metrics(REFS, other, meteor=java)]
        assert len(java_children()) == 1
    assert java_children() == []
    assert shared[0] == ours
    assert shared[1]["METEOR"] == caption_metrics(REFS, other)["METEOR"] != ours["METEOR"]


def test_perfect_captions():
    refs = {"a": ["a man is playing a guitar", "x y"], "b": ["a woman slices an onion"],
            "c": ["two dogs run in the park"]}
    m = caption_metrics(refs, {k: v[0] for k, v in refs.items()}, meteor=False)  # one JVM per module is enough
    for k in ("BLEU1", "BLEU2", "BLEU3", "BLEU4", "ROUGE_L"):
        assert m[k] == pytest.approx(1.0, abs=1e-8), k
    # CIDEr-D averages 10 x cosine x length penalty over an item's references: 10 against an identical one,
    # 0 against "x y" (no shared n-gram), so item a scores (10 + 0) / 2 and the mean is (5 + 10 + 10) / 3.
    assert m["CIDEr"] == pytest.approx(25 / 3, rel=1e-9)


def test_single_item_cider_is_zero_but_bleu_is_not():
    # IDF = log(#items) - log(df): with one item every n-gram weighs 0.
    m = caption_metrics({"a": ["a man is playing a guitar"]}, {"a": "a man is playing a guitar"}, meteor=False)
    assert m["CIDEr"] == 0.0 and m["BLEU4"] == pytest.approx(1.0)


def test_bleu_by_hand_brevity_penalty_and_epsilons():
    # 2-word hypothesis, 6-word reference: unigram/bigram precision 1, BP = exp(1 - 6/2).
    m = caption_metrics({"a": ["a cat sat on the mat"]}, {"a": "a cat"}, meteor=False)
    bp = math.exp(-2)
    assert m["BLEU1"] == pytest.approx(bp, rel=1e-8)
    assert m["BLEU2"] == pytest.approx(bp, rel=1e-8)
    # No trigram at all: pycocoevalcap's (0 + 1e-15) / (0 + 1e-9) = 1e-6 instead of 0, so BLEU-3 = 1e-2 * BP.
    assert m["BLEU3"] == pytest.approx(1e-2 * bp, rel=1e-6)
    assert m["BLEU4"] == pytest.approx(1e-3 * bp, rel=1e-6)
    assert "METEOR" not in m


def test_rouge_l_by_hand_takes_max_precision_and_max_recall_separately():
    # "a cat sat" vs ref 1: LCS 2 -> P 2/3, R 2/6; vs ref 2: LCS 1 -> P 1/3, R 1/2.
    # pycocoevalcap combines max P = 2/3 and max R = 1/2 with beta = 1.2; no single reference gets that high.
    m = caption_metrics({"a": ["cat sat on the mat today", "a dog"]}, {"a": "a cat sat"}, meteor=False)
    p, r, b2 = 2 / 3, 1 / 2, 1.2 ** 2
    assert m["ROUGE_L"] == pytest.approx((1 + b2) * p * r / (r + b2 * p), rel=1e-12)
    assert m["ROUGE_L"] == pytest.approx(0.5570776, abs=1e-7)


def test_rouge_l_is_a_mean_over_items():
    refs = {"a": ["cat sat on the mat today", "a dog"], "b": ["one two three"], "c": ["four five"]}
    m = caption_metrics(refs, {"a": "a cat sat", "b": "one two three", "c": "six"}, meteor=False)
    assert m["ROUGE_L"] == pytest.approx((0.5570776255707762 + 1 + 0) / 3, rel=1e-12)


@pytest.mark.parametrize("refs, hyps, msg", [
    ({"a": ["x"]}, {"a": "x", "b": "y"}, "hypothesis id 'b' has no references"),
    ({"a": ["x"], "c": ["z"]}, {"a": "x"}, "reference id 'c' has no hypothesis"),
    ({}, {}, "at least one hypothesis"),
    ({"a": []}, {"a": "x"}, "non-empty list of strings"),
    ({"a": "a man"}, {"a": "a man"}, "non-empty list of strings"),
    ({"a": ["x", None]}, {"a": "x"}, "expected captions as strings, got NoneType"),
    ({"a": ["x"]}, {"a": ["x"]}, "expected captions as strings, got list"),
    ({"a": ["x"]}, {"a": 3}, "expected captions as strings, got int"),
    ({"a": ["a man\nplays"]}, {"a": "x"}, "line break"),
    ([["x"]], {"a": "x"}, "dicts keyed by id"),
])
def test_bad_input_is_one_line_error(refs, hyps, msg):
    with pytest.raises(MeltrError, match=msg) as err:
        caption_metrics(refs, hyps)
    assert "\n" not in str(err.value)


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    with pytest.raises(MeltrError, match="METEOR needs Java.*openjdk-17-jre-headless"):
        caption_metrics({"a": ["x y"]}, {"a": "x y"})
    assert "METEOR" not in caption_metrics({"a": ["x y"]}, {"a": "x y"}, meteor=False)


@needs_java
def test_java_failure_is_reported_and_reaped(monkeypatch):
    # A jar that does not exist: java exits at once, so pycocoevalcap hits a broken pipe or an empty line.
    monkeypatch.setattr("pycocoevalcap.meteor.meteor.METEOR_JAR", "no-such-meteor.jar")
    with pytest.raises(MeltrError, match="METEOR \\(java\\) failed.*no-such-meteor.jar"):
        caption_metrics({"a": ["x y"]}, {"a": "x y"})
    assert java_children() == []
