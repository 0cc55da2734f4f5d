"""Captioning metrics as UniVL / MELTR compute them with nlg-eval (datasets.md §6.5).

nlg-eval calls the pycocoevalcap 1.2 scorers directly: no PTB tokenizer, each string only `.strip()`ed,
`gts = {id: [refs]}`, `res = {id: [hyp]}`. Scores are fractions; papers multiply them by 100.
Quirks that are kept because the published numbers have them: BLEU adds 1e-15/1e-9 epsilons (a BLEU-4 with
no matching 4-gram is ~1e-9, not 0), and CIDEr (really CIDEr-D) takes its IDF from the evaluated set, so it
is 0 for a single item and n-grams in every item's references weigh nothing.
"""
from __future__ import annotations

import contextlib
import shutil

from ..errors import MeltrError

JAVA_HINT = "METEOR needs Java on PATH (e.g. `apt install openjdk-17-jre-headless`), or pass meteor=False"


def _check(references: dict, hypotheses: dict) -> None:
    where = "caption_metrics"
    if not isinstance(references, dict) or not isinstance(hypotheses, dict):
        raise MeltrError(f"{where}: expected references and hypotheses as dicts keyed by id")
    if not hypotheses:
        raise MeltrError(f"{where}: expected at least one hypothesis, got none")
    extra = next((k for k in hypotheses if k not in references), None)
    if extra is not None:
        raise MeltrError(f"{where}: hypothesis id {extra!r} has no references")
    missing = next((k for k in references if k not in hypotheses), None)
    if missing is not None:
        raise MeltrError(f"{where}: reference id {missing!r} has no hypothesis")
    for k, hyp in hypotheses.items():
        refs = references[k]
        # A bare string is a sequence too and would be scored as one reference per character.
        if not isinstance(refs, (list, tuple)) or not refs:
            raise MeltrError(f"{where}: references[{k!r}]: expected a non-empty list of strings, got {refs!r}")
        for s in (hyp, *refs):
            if not isinstance(s, str):
                raise MeltrError(f"{where}: id {k!r}: expected captions as strings, got {type(s).__name__}")
            # METEOR talks to java one line per item: an inner line break desynchronises it.
            if "\n" in s.strip() or "\r" in s.strip():
                raise MeltrError(f"{where}: id {k!r}: caption {s!r} contains a line break")


class MeteorProcess:
    """One METEOR 1.5 java process (pycocoevalcap's) for any number of corpora.

    Starting it loads a 60 MB paraphrase table, seconds of work: `evaluate` opens one per captioning run,
    before decoding, so that java loads while the model decodes, and scores greedy and beam with it. Each
    EVAL line is scored on its own, so sharing the process changes no number. Use it as a context manager;
    leaving it always shuts java down.
    """

    def __init__(self):
        if shutil.which("java") is None:
            raise MeltrError(f"caption_metrics: {JAVA_HINT}")
        from pycocoevalcap.meteor.meteor import Meteor

        class _Meteor(Meteor):
            # pycocoevalcap 1.2's Meteor has no close(), and its __del__ takes a lock that compute_score
            # never releases when it raises, so garbage collection would then hang forever.
            def __del__(self):
                pass

        self.scorer = _Meteor()

    def score(self, gts: dict, res: dict) -> float:
        """Corpus METEOR of {id: [hypothesis]} against {id: [references]}."""
        try:
            return float(self.scorer.compute_score(gts, res)[0])
        except (ValueError, OSError) as exc:  # java died or answered something that is not a score
            proc = self.scorer.meteor_p
            proc.kill()
            err = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise MeltrError(f"caption_metrics: METEOR (java) failed: {err[-1] if err else exc}") from None

    def close(self) -> None:
        proc = self.scorer.meteor_p
        proc.kill()  # what pycocoevalcap's __del__ does; the JVM holds nothing worth flushing
        with contextlib.suppress(OSError):  # a dead java leaves unflushed input: BrokenPipeError
            proc.stdin.close()
        with proc:  # closes the other pipes and reaps the process
            pass

    def __enter__(self) -> "MeteorProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_meteor(meteor: "bool | MeteorProcess"):
    """The context to score METEOR in, yielding the MeteorProcess to use or None (no METEOR): `meteor` itself
    when it is an open process (left open), a new one for True (closed on exit), nothing for False."""
    if isinstance(meteor, MeteorProcess):
        return contextlib.nullcontext(meteor)
    return MeteorProcess() if meteor else contextlib.nullcontext(None)


def caption_metrics(references: dict[str, list[str]], hypotheses: dict[str, str], *,
                    meteor: bool | MeteorProcess = True) -> dict[str, float]:
    """BLEU1..BLEU4, METEOR, ROUGE_L and CIDEr (fractions) of one hypothesis per id against its references.

    references: {id: [reference captions]}; hypotheses: {id: caption}; the ids must be the same.
    meteor=False skips METEOR (its key is then absent), which is the only metric that needs Java; a
    MeteorProcess scores with that open java process instead of starting one.
    Raises MeltrError for mismatched ids, empty input or reference lists, non-string captions, captions
    with inner line breaks, and, when meteor=True, a missing `java`.
    """
    _check(references, hypotheses)
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {k: [r.strip() for r in references[k]] for k in hypotheses}
    res = {k: [h.strip()] for k, h in hypotheses.items()}
    with open_meteor(meteor) as java:  # started first: it loads while BLEU is computed
        bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]  # verbose=0: same numbers, no prints
        out = {f"BLEU{n}": float(b) for n, b in enumerate(bleu, start=1)}
        if java is not None:
            out["METEOR"] = java.score(gts, res)
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out
