"""The one benchmark runner: methods timed side by side in one process, interleaved.

`bench meltr-step`, `bench scaling` and the pipeline's per-task cost jobs all measure through it:
- every contender (one method variant on its own copy of the same model, same seed, same batches) warms up
  first; warm-up steps are never timed;
- then rounds: in each round every contender runs one window of k steps per k it is timed at (the baselines,
  which have no k, one window of max(k) steps), in an order rotated by one between rounds, so that a slow
  drift of a shared machine (clocks, caches, other jobs) falls on every method alike;
- a window's steps are timed with CUDA events and no host synchronisation inside it on a GPU (one
  synchronisation at the window's end, where the clock is read), with the wall clock on a CPU;
- a ratio between two contenders is taken per round, between adjacent windows, and reported as the median
  and IQR over rounds; one whose relative IQR exceeds `UNUSABLE_SPREAD`, or that has fewer than
  `MIN_ROUNDS` rounds, is marked unusable (`usable: false`) instead of being stated as a finding;
- peak memory has the one meaning of train/memory.py, measured per contender in its own steps after warm-up.
"""
from __future__ import annotations

import gc

import numpy as np
import torch

from ..data.batching import Batcher, Tokenized
from ..errors import MeltrError
from ..models.tokenizer import load_tokenizer
from ..train.device import autocast, sync
from ..train.loop import run_step
from ..train.memory import PeakMemory
from ..train.timing import median_or_none, window_stats

UNUSABLE_SPREAD = 0.2  # relative IQR of a per-round ratio above which it says nothing
MIN_ROUNDS = 3
PROTOCOL = ("interleaved: after warm-up, rounds of one window of k steps per method and k (baselines: max(k) "
            "steps), the order rotated between rounds; per-round ratios, median and IQR; CUDA events with one "
            "synchronisation per window on a GPU, wall clock on a CPU")


def synthetic_batches(n: int, batch_size: int, frames: int, words: int, dim: int, seed: int,
                      device: torch.device) -> list[dict]:
    """Batches of exactly `words` tokens and `frames` frames: random word pieces between [CLS] and [SEP]
    (the cost of a step depends on lengths, not on which words), random frame features."""
    tok = load_tokenizer()
    batcher = Batcher(tok)
    gen = torch.Generator().manual_seed(seed)
    first_word = max(tok.all_special_ids) + 1
    out = []
    for _ in range(n):
        ids = torch.randint(first_word, tok.vocab_size, (batch_size, words), generator=gen)
        ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
        video = torch.randn((batch_size, frames, dim), generator=gen)
        batch = batcher.make(video, Tokenized(ids, torch.ones_like(ids)), gen)
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


def is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text \
        or "can't allocate memory" in text


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Contender:
    """One method variant on its own model: combiner, optimiser and step counter, stepped a window at a time.
    `windows[(round, k)]` holds the step times of each timed window (k None for a baseline)."""

    def __init__(self, name: str, model: torch.nn.Module, combiner, batches: list[dict], device: torch.device,
                 precision: str = "fp32", lr: float = 1e-4, seed: int = 0, samples_per_step: int | None = None,
                 grad_clip: float | None = None):
        self.name, self.model, self.combiner, self.batches = name, model, combiner, batches
        self.device, self.precision, self.seed, self.grad_clip = device, precision, seed, grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr)
        self.is_meltr = hasattr(combiner, "cfg")
        self.samples_per_step = samples_per_step or len(next(iter(batches[0].values())))
        self.step = 0
        self.info: dict = {}  # what the caller records beside the timing (parameters, FLOPs)
        self.windows: dict[tuple[int, int | None], list[float]] = {}
        self.meta_windows: dict[tuple[int, int | None], list[float]] = {}

    def set_k(self, k: int) -> None:
        if self.is_meltr:
            self.combiner.cfg.k = k

    def run(self, n: int, window: tuple[int, int | None] | None = None) -> None:
        """n steps; with `window` = (round, k) their times are recorded under it. Events on a GPU: the host
        is synchronised once, after the last step, and the times are read then."""
        events = self.device.type == "cuda"
        results = []
        for _ in range(n):
            self.step += 1
            batch = self.batches[(self.step - 1) % len(self.batches)]
            with autocast(self.device, self.precision):
                results.append(run_step(self.model, self.combiner, self.opt, self.params, batch, self.step,
                                        self.seed + self.step, self.device, self.grad_clip, events=events,
                                        check_finite=False))
        sync(self.device)
        if window is None:
            return
        times, meta = self.windows.setdefault(window, []), self.meta_windows.setdefault(window, [])
        for r in results:
            r.resolve()
            if not torch.isfinite(r.total):
                raise MeltrError(f"bench {self.name}: loss not finite at step {self.step}; expected finite losses "
                                 "(lower the learning rate or check the inputs)")
            times.append(r.step_ms)
            if r.meta is not None:
                meta.append(r.meta_ms)

    def peak_memory_mb(self, steps: int, base_mb: float) -> float:
        """Peak memory over `steps` untimed steps (see train/memory.py); base_mb: allocated before the model."""
        self.opt.zero_grad(set_to_none=True)
        with PeakMemory(self.device, lambda: ([self.model, self.combiner], [self.opt, getattr(
                self.combiner, "meta_opt", None)]), base_mb) as peak:
            self.run(steps)
        return peak.mb

    # ------------------------------------------------------------------ what was measured
    def times(self, k: int | None) -> list[float]:
        return [t for (_, kk), ts in sorted(self.windows.items(), key=lambda kv: kv[0][0]) if kk == k for t in ts]

    def summary(self, k: int | None) -> dict:
        meta = [t for (_, kk), ts in self.meta_windows.items() if kk == k for t in ts]
        return {**window_stats(self.times(k), self.samples_per_step), "meta_step_ms": median_or_none(meta),
                "rounds": sum(1 for (_, kk) in self.windows if kk == k)}

    def round_rates(self, k: int | None) -> dict[int, float]:
        """samples/s of each round's window at this k."""
        return {r: window_stats(ts, self.samples_per_step)["samples_per_s"] for (r, kk), ts in self.windows.items()
                if kk == k and ts}


def ratio(rates_a: dict[int, float], rates_b: dict[int, float]) -> dict:
    """a's samples/s over b's, round by round (`Contender.round_rates`): median, IQR, and whether it is usable."""
    per_round = np.array([rates_a[r] / rates_b[r] for r in sorted(set(rates_a) & set(rates_b))])
    if not len(per_round):
        return {"median": None, "iqr": None, "rounds": 0, "usable": False}
    q1, med, q3 = np.percentile(per_round, [25, 50, 75])
    return {"median": float(med), "iqr": float(q3 - q1), "rounds": int(len(per_round)),
            "usable": bool(len(per_round) >= MIN_ROUNDS and (q3 - q1) <= UNUSABLE_SPREAD * med)}


def interleave(contenders: dict[str, Contender], ks: list[int], rounds: int, warmup: int,
               progress=None) -> None:
    """Warm every contender up, then time `rounds` rounds (see the module docstring)."""
    kmax = max(ks)
    for c in contenders.values():
        c.set_k(kmax)
        c.run(warmup)
    names = list(contenders)
    for r in range(rounds):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            c = contenders[name]
            for k in (ks if c.is_meltr else [None]):
                c.set_k(k or kmax)
                c.run(k or kmax, window=(r, k))
        if progress is not None:
            progress.update(1)
