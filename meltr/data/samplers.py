"""Training batches for each task family, each batch a pure function of (seed, step).

Every family feeds the same auxiliary losses (align, cmlm, cmfm, ...) a text per clip: a caption for
retrieval and captioning, "question answer" for QA (what the clip shows, in words). The QA families add
the tensors of their heads (`task_tensors`): the five "question [SEP] option" texts (mc), the question and
its label in the answer vocabulary (oe) or its count (count). TVQA's subtitles go in as a second segment, cut
first. The VideoLLM family reads the same records as prompt and continuation: "[CLS] question subtitles
[SEP] option [SEP]" per option, "[CLS] question [SEP] answer [SEP]" (token type 1 marks the continuation).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from ..errors import MeltrError
from .batching import Tokenized, epoch_order, take, tokenize

CAPTION_FAMILIES = ("retrieval", "captioning")


def answer_vocabulary(records: list[dict]) -> list[str]:
    """Training answers, most frequent first (ties alphabetical): the open-ended classifier's labels."""
    counts = Counter(r["answer"] for r in records)
    return sorted(counts, key=lambda a: (-counts[a], a))


def qa_text(rec: dict, family: str) -> str:
    """The text the auxiliary losses see for a QA record: the question with its answer."""
    if family == "multiple_choice":
        return f"{rec['question']} {rec['options'][rec['answer']]}"
    return f"{rec['question']} {rec['answer']}"


def option_texts(records: list[dict], tokenizer, max_words: int) -> Tokenized:
    """(N, O, L) "option [SEP] question [SEP] subtitles" for every option of every record: the option first,
    so that truncation to max_words never cuts the one part that differs between the five texts."""
    n_opt = len(records[0]["options"])
    firsts = [f"{o} {tokenizer.sep_token} {r['question']}" for r in records for o in r["options"]]
    subs = [r.get("subtitles", "") for r in records for _ in r["options"]]
    t = tokenize(tokenizer, firsts, max_words, pairs=subs)
    return Tokenized(t.ids.view(len(records), n_opt, -1), t.mask.view(len(records), n_opt, -1))


def prompt(rec: dict) -> str:
    """What a VideoLLM reads before the answer: the question, then the subtitles (cut first when too long)."""
    return f"{rec['question']} {rec['subtitles']}" if rec.get("subtitles") else rec["question"]


def task_tensors(records: list[dict], tokenizer, family: str, max_words: int, answers: list[str] | None = None,
                 with_answers: bool = True) -> dict[str, torch.Tensor]:
    """The QA heads' tensors of both model families for these records (none for retrieval and captioning).
    `with_answers` False (evaluation): the open-ended continuation is left out, so no answer is in the input."""
    if family in CAPTION_FAMILIES:
        return {}
    if family == "multiple_choice":
        qa = option_texts(records, tokenizer, max_words)
        n_opt = len(records[0]["options"])
        lm = tokenize(tokenizer, [prompt(r) for r in records for _ in r["options"]], max_words,
                      pairs=[o for r in records for o in r["options"]])
        shape = (len(records), n_opt, -1)
        out = {"qa_ids": qa.ids, "qa_mask": qa.mask, "opt_ids": lm.ids.view(shape), "opt_mask": lm.mask.view(shape),
               "opt_type": lm.types.view(shape)}
        if all(r["answer"] is not None for r in records):
            out["answer"] = torch.tensor([r["answer"] for r in records], dtype=torch.long)
        return out
    q = tokenize(tokenizer, [r["question"] for r in records], max_words,
                 pairs=[r.get("subtitles", "") for r in records])
    out = {"q_ids": q.ids, "q_mask": q.mask}
    if family == "count":
        out["target"] = torch.tensor([float(r["answer"]) for r in records])
        return out
    label = {a: i for i, a in enumerate(answers or [])}
    out["label"] = torch.tensor([label.get(r["answer"], -100) for r in records], dtype=torch.long)
    if with_answers:
        lm = tokenize(tokenizer, [prompt(r) for r in records], max_words, pairs=[r["answer"] for r in records])
    else:
        lm = tokenize(tokenizer, [prompt(r) for r in records], max_words)
        lm.types = torch.zeros_like(lm.ids)
    out.update(ans_ids=lm.ids, ans_mask=lm.mask, ans_type=lm.types)
    return out


class TaskSampler:
    def __init__(self, records: list[dict], tokenizer, family: str, max_words: int, batch_size: int, seed: int,
                 answers: list[str] | None = None):
        self.family, self.batch_size, self.seed = family, batch_size, seed
        self.video_ids = [r["video_id"] for r in records]
        if len(records) < batch_size:
            raise MeltrError(f"train.batch_size {batch_size}: expected <= the {len(records)} training records")
        self.per_epoch = len(records) // batch_size
        self.task: dict[str, torch.Tensor] = {}
        if family in CAPTION_FAMILIES:
            # Each epoch visits every clip once with one of its captions: a batch never holds the same clip
            # twice (a duplicate would be a false negative for the contrastive losses).
            self.offsets = np.cumsum([0] + [len(r["captions"]) for r in records])
            self.text = tokenize(tokenizer, [c for r in records for c in r["captions"]], max_words)
            return
        self.offsets = None
        self.text = tokenize(tokenizer, [qa_text(r, family) for r in records], max_words)
        self.task = task_tensors(records, tokenizer, family, max_words, answers)

    def indices(self, step: int) -> tuple[list[int], list[int]]:
        """(record rows, text rows) of batch `step` (0-based)."""
        epoch, within = divmod(step, self.per_epoch)
        order = epoch_order(len(self.video_ids), self.seed, epoch)
        rows = [int(v) for v in order[within * self.batch_size:(within + 1) * self.batch_size]]
        if self.offsets is None:
            return rows, rows
        rng = np.random.default_rng([self.seed, epoch, within, 1])
        caps = [int(self.offsets[v] + rng.integers(self.offsets[v + 1] - self.offsets[v])) for v in rows]
        return rows, caps

    def batch(self, step: int, video_rows: np.ndarray, batcher, gen: torch.Generator) -> dict:
        rows, texts = self.indices(step)
        task = {k: v[rows] for k, v in self.task.items()}
        return batcher.make(torch.from_numpy(video_rows[rows]), take(self.text, texts), gen, **task)


def text_length(cfg: dict, family: str) -> int:
    """Token budget of a task's texts: captions, or QA's option + question + subtitles."""
    return cfg["max_words"] if family in ("retrieval", "captioning") else cfg.get("qa_max_words", cfg["max_words"])
