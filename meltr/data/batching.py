"""Turn (video features, caption) pairs into the tensors the model's losses need.

All randomness (which tokens and frames are masked, the epoch order) comes from an explicit
`torch.Generator`, so a batch is a pure function of the seed and the step: replayed batches, resumed
runs and the hypergradient estimators' repeated forwards all see the same masks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Tokenized:
    ids: torch.Tensor  # (N, L) long
    mask: torch.Tensor  # (N, L) long
    types: torch.Tensor | None = None  # (N, L) long: 1 on the second segment ([SEP] included), with pairs


def tokenize(tokenizer, texts: list[str], max_words: int, pairs: list[str] | None = None) -> Tokenized:
    """[CLS] text [SEP] (or [CLS] text [SEP] pair [SEP]), cut to max_words and padded to the longest of `texts`
    (short texts cost no attention over padding); when the whole does not fit,
    the longer of text and pair (e.g. subtitles) is cut first."""
    if pairs is not None and not any(pairs):
        pairs = None
    enc = tokenizer(list(texts), None if pairs is None else list(pairs), padding="longest",
                    truncation="longest_first", max_length=max_words,
                    return_tensors="pt")
    return Tokenized(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"] if pairs is not None else None)


def take(t: Tokenized, rows) -> Tokenized:
    return Tokenized(t.ids[rows], t.mask[rows], None if t.types is None else t.types[rows])


class Batcher:
    def __init__(self, tokenizer, mask_prob: float = 0.15):
        self.mask_prob = mask_prob
        self.mask_id = tokenizer.mask_token_id
        self.cls_id, self.sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def make(self, video: torch.Tensor, text: Tokenized, gen: torch.Generator, context: Tokenized | None = None,
             **task: torch.Tensor) -> dict:
        """video: (B, T, D) float; text: B tokenized captions (for QA: question and answer); context: what the
        caption decoder reads besides the video (None: [CLS][SEP], an empty text); `task`: the QA heads'
        tensors (qa_ids/qa_mask, q_ids/q_mask, answer, label, target). Returns the batch dict of the model."""
        ids, mask = text.ids, text.mask
        video_mask = torch.ones(video.shape[:2], dtype=torch.long)
        mlm_ids, mlm_labels = self._mask_tokens(ids, mask, gen)
        mfm_mask = self._mask_frames(video.shape[0], video.shape[1], gen)
        dec_labels = ids[:, 1:].clone()
        dec_labels[mask[:, 1:] == 0] = -100
        if context is None:
            context = self.empty(ids.shape[0])
        return task | {
            "ctx_ids": context.ids, "ctx_mask": context.mask,
            "text_ids": ids, "text_mask": mask, "video": video, "video_mask": video_mask,
            "mlm_ids": mlm_ids, "mlm_labels": mlm_labels,
            "mfm_video": video.masked_fill(mfm_mask.unsqueeze(-1), 0.0), "mfm_mask": mfm_mask,
            "dec_ids": ids[:, :-1], "dec_mask": mask[:, :-1], "dec_labels": dec_labels,
        }

    def empty(self, n: int) -> Tokenized:
        ids = torch.zeros((n, 2), dtype=torch.long)
        ids[:, 0], ids[:, 1] = self.cls_id, self.sep_id
        return Tokenized(ids, torch.ones_like(ids))

    def _mask_tokens(self, ids, mask, gen):
        candidates = (mask == 1) & ~torch.isin(ids, self.special)
        chosen = (torch.rand(ids.shape, generator=gen) < self.mask_prob) & candidates
        # Every caption masks at least one word, so cmlm always has a target.
        first = torch.argmax((candidates & ~chosen.any(1, keepdim=True)).long(), dim=1)
        needs = ~chosen.any(1) & candidates.any(1)
        chosen[needs, first[needs]] = True
        labels = torch.full_like(ids, -100)
        labels[chosen] = ids[chosen]
        return ids.masked_fill(chosen, self.mask_id), labels

    def _mask_frames(self, batch: int, frames: int, gen) -> torch.Tensor:
        chosen = torch.rand((batch, frames), generator=gen) < self.mask_prob
        none = ~chosen.any(1)
        chosen[none, torch.randint(frames, (int(none.sum()),), generator=gen)] = True
        return chosen


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)
