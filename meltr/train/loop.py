"""One training loop for every method: finetune, multitask and MELTR differ only in their combiner.

Timing is honest: warm-up steps are excluded (a resumed run times only its own steps, after its own warm-up),
the timed window is a multiple of the meta interval k (every window holds the same number of meta steps),
and logging work (MELTR's effective weights) happens outside the timed region. Where the host waits for a
GPU: at each clock read of a training step (SyncClock), at the step's NaN guard and its log (both read the
loss), and once per meta step (the NaN guard of the meta update). The benchmarks (bench/runner.py) time
with CUDA events and skip the per-step guard, so their windows run without a host synchronisation.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..combiners import build_combiner
from ..config import MeltrConfig, TrainConfig
from ..data.batching import Batcher
from ..data.records import read_records
from ..data.registry import task_family
from ..data.samplers import TaskSampler, answer_vocabulary, text_length
from ..errors import MeltrError
from ..features.store import FeatureStore
from ..io import atomic_path, ensure_writable, write_json, write_jsonl
from ..models.adapters import trainable_count
from ..models.build import build_model, count_parameters
from ..models.losses import primary_loss, task_losses
from ..models.presets import model_family
from ..models.tokenizer import load_tokenizer
from ..rng import seeded
from .checkpoint import full_state_dict, load_checkpoint, save_checkpoint
from .device import EventClock, SyncClock, autocast, device_name, resolve_device, resolve_precision
from .memory import PeakMemory
from .parallel import init_from_env, unwrap, wrap
from .timing import median_or_none, training_window, window_stats

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    losses: torch.Tensor           # the loss vector, detached
    total: torch.Tensor            # the combined loss, detached
    meta: dict | None              # the combiner's meta-step stats when it ran one
    step_ms: float | None          # None when the loss was not finite and the step was skipped
    meta_ms: float | None
    marks: tuple | None = None     # CUDA events still to be read (run_step(events=True))
    clock: object = None

    def resolve(self) -> "StepResult":
        """Turn recorded CUDA events into step_ms/meta_ms (the device must have been synchronised)."""
        if self.marks is not None:
            t0, t1, t2, t3, t4 = self.marks
            ms = self.clock.ms
            self.step_ms = ms(t0, t4)
            self.meta_ms = ms(t1, t2) + ms(t3, t4) if self.meta is not None else None
            self.marks = None
        return self


def run_step(model, combiner, opt, params, batch: dict, step: int, seed: int, device: torch.device,
             grad_clip: float | None = None, events: bool = False, check_finite: bool = True) -> StepResult:
    """One training step of any method, timed: forward (under `seed`, so it can be replayed), the
    combiner, backward, the combiner's pre-update hook, the optimiser step, the combiner's meta step.
    `events` (CUDA only): time with CUDA events and no synchronisation; call .resolve() after a sync.
    `check_finite`: skip the update when the combined loss is not finite, which reads it on the host (a
    synchronisation per step on a GPU); the benchmarks check their losses after each window instead."""
    clock = EventClock() if events and device.type == "cuda" else SyncClock(device)
    t0 = clock.mark()
    with seeded(seed):
        losses = model(batch, combiner.loss_names)
    vec = torch.stack([losses[n] for n in combiner.loss_names])
    total = combiner(vec)
    if check_finite and not torch.isfinite(total):
        return StepResult(vec.detach(), total.detach(), None, None, None)
    opt.zero_grad(set_to_none=True)
    # The combiner's own parameters only move in its meta step; a meta step on this step's batch
    # differentiates the primary loss through this graph once more.
    total.backward(inputs=params, retain_graph=combiner.keeps_graph(step))
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    t1 = clock.mark()
    model = unwrap(model)  # the meta step differentiates the plain module (autograd.grad bypasses DDP)
    pre = combiner.pre_update(step, batch, model, vec, seed)
    t2 = clock.mark()
    opt.step()
    t3 = clock.mark()
    post = combiner.meta_step(step, batch, model)
    t4 = clock.mark()
    meta = pre or post
    result = StepResult(vec.detach(), total.detach(), meta, None, None, (t0, t1, t2, t3, t4), clock)
    return result if isinstance(clock, EventClock) else result.resolve()


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class TaskData:
    """A task's training data as the trainer and the cost job see it: records, features, tokenizer, batches."""

    cfg: TrainConfig
    family: str
    records: list[dict]
    dropped: list[dict]
    store: FeatureStore
    tokenizer: object
    answers: list[str]
    words: int
    sampler: TaskSampler
    video_rows: np.ndarray
    batcher: Batcher

    def batch(self, index: int, device: torch.device) -> dict:
        """The index-th training batch, a function of (seed, index) only, so a resumed run draws the same."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + index)
        return _to(self.sampler.batch(index, self.video_rows, self.batcher, gen), device)

    def new_model(self, device: torch.device) -> torch.nn.Module:
        """A freshly initialised model for this task (seeded), its frame statistics set, on `device`."""
        cfg = self.cfg
        model = build_model(cfg.model, self.store.dim, self.tokenizer.vocab_size, self.words, self.store.frames,
                            cfg.seed, num_answers=max(1, len(self.answers)), adapters=cfg.adapters,
                            lora_rank=cfg.lora_rank, checkpointing=cfg.checkpointing)
        model.set_feature_stats(torch.from_numpy(self.video_rows))
        return model.to(device).train()

    def new_combiner(self, method: str, meltr: dict, device: torch.device):
        family = model_family(self.cfg.model)
        losses = list(task_losses(self.family, self.cfg.loss_set, family))
        return build_combiner(method, losses, primary_loss(self.family, family),
                              {"seed": self.cfg.seed, **meltr}).to(device)


def load_task_data(train_manifest: str, features_dir: str, cfg: TrainConfig) -> TaskData:
    family = task_family(cfg.dataset, cfg.task)
    records = read_records(train_manifest, family)  # the manifest first: its errors say more than the store's
    store = FeatureStore(features_dir)
    # Clips whose video was skipped as broken (features.on_bad_video: skip) are left out and listed.
    records, dropped = store.keep_available(records, str(train_manifest))
    tokenizer = load_tokenizer()
    answers = answer_vocabulary(records) if family == "open_ended" else []
    words = text_length(asdict(cfg), family)
    sampler = TaskSampler(records, tokenizer, family, words, cfg.batch_size, cfg.seed, answers)
    return TaskData(cfg, family, records, dropped, store, tokenizer, answers, words, sampler,
                    store.get(sampler.video_ids), Batcher(tokenizer, cfg.mask_prob))


def lr_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over warmup_frac of the steps, then linear decay to 0."""
    warm = max(1, int(cfg.warmup_frac * cfg.steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))))


def train(train_manifest: str, features_dir: str, out_dir: str, cfg: TrainConfig, progress: bool = True) -> dict:
    """Train one (dataset, task, method, model) cell; write model.pt, train_log.jsonl and throughput.json.

    A rerun after a kill resumes from out_dir/checkpoint.pt (same settings only). Under torchrun each rank
    draws its own batches (DDP, or FSDP2 with train.parallel fsdp) and rank 0 writes the outputs."""
    out = ensure_writable(out_dir)  # before any step: a read-only or full disk is found now
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = init_from_env()
    device = resolve_device(cfg.device, distributed=world > 1)
    data = load_task_data(train_manifest, features_dir, cfg)
    model = wrap(data.new_model(device), device, cfg.parallel)
    sharded = world > 1 and cfg.parallel == "fsdp"
    if sharded and cfg.checkpoint_every:
        logger.warning("train.parallel fsdp: no resumable checkpoints (train.checkpoint_every is ignored)")
    combiner = data.new_combiner(cfg.method, cfg.meltr, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = lr_schedule(opt, cfg)

    ckpt_path = out / "checkpoint.pt"
    state = load_checkpoint(ckpt_path, cfg, unwrap(model), opt, sched, combiner, device) or \
        {"step": 0, "log": [], "bad": 0, "resumed_from": []}
    if state["step"]:
        state["resumed_from"].append(state["step"])
    # Timing belongs to this process: a resumed run times its own steps after its own warm-up.
    timed: list[tuple[float, float | None]] = []
    memory = PeakMemory(device, lambda: ([unwrap(model), combiner], [opt, getattr(combiner, "meta_opt", None)]),
                        strict=False)
    bar = tqdm(range(state["step"] + 1, cfg.steps + 1), desc=f"train {cfg.method}/{cfg.model}", unit="step",
               initial=state["step"], total=cfg.steps, disable=not progress or rank != 0)
    measuring = False
    for step in bar:
        if len(timed) == cfg.timing_warmup and not measuring:
            memory.__enter__()
            measuring = True
        with autocast(device, cfg.precision):
            r = run_step(model, combiner, opt, params, data.batch((step - 1) * world + rank, device), step,
                         cfg.seed * 1_000_003 + step, device, cfg.grad_clip)
        state["step"] = step
        if r.step_ms is None:
            _count_bad_step(state, cfg, combiner, r, step)
            continue
        state["bad"] = 0
        sched.step()
        timed.append((r.step_ms, r.meta_ms if r.meta is not None else None))
        state["log"].append(_log_entry(step, r, combiner))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(r.total):.3f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps and rank == 0 \
                and not sharded:
            save_checkpoint(ckpt_path, cfg, unwrap(model), opt, sched, combiner, state)
    if measuring:
        memory.__exit__(None, None, None)

    _check_finite_end(cfg, state, model)
    throughput = _throughput(cfg, timed, getattr(getattr(combiner, "cfg", None), "k", 1), device, world, memory.mb)
    weights = full_state_dict(model, sharded)  # FSDP2: every rank takes part in gathering the shards
    if rank != 0:  # rank 0 holds the same weights (DDP) or the gathered ones (FSDP2) and writes them
        return throughput
    model = unwrap(model)
    throughput.update(skipped_records=len(data.dropped), skipped_videos=sorted({r["video"] for r in data.dropped}),
                      family=data.family, params=count_parameters(model), params_m=count_parameters(model) / 1e6,
                      trainable_params=trainable_count(model), adapters=cfg.adapters,
                      combiner_params=count_parameters(combiner), resumed=bool(state["resumed_from"]),
                      resumed_from=state["resumed_from"],
                      # MELTR's settings as resolved (meltr.net's official values where params.yaml says null)
                      meltr_settings=asdict(combiner.cfg) if hasattr(combiner, "cfg") else None)
    _write_outputs(out, cfg, data, weights, combiner, state["log"], throughput)
    ckpt_path.unlink(missing_ok=True)  # the finished outputs hold everything; nothing left to resume
    return throughput


def _check_finite_end(cfg: TrainConfig, state: dict, model: torch.nn.Module) -> None:
    """Training is a success only when it ends finite: its last step's loss and every weight."""
    if state["bad"]:
        raise MeltrError(f"train {cfg.method}/{cfg.model}: the last {state['bad']} step(s) had non-finite losses "
                         f"(fewer than train.nan_patience {cfg.nan_patience}); expected a finite end of training - "
                         "nothing was saved as a result (lower train.lr or check the features)")
    bad = [n for n, p in unwrap(model).named_parameters() if not torch.isfinite(p.detach()).all()]
    if bad:
        raise MeltrError(f"train {cfg.method}/{cfg.model}: {len(bad)} weight tensors are not finite (first: "
                         f"{bad[0]}); expected finite weights - nothing was saved as a result")


def _count_bad_step(state: dict, cfg: TrainConfig, combiner, r: StepResult, step: int) -> None:
    """A non-finite loss skips the step; nan_patience of them in a row stop training."""
    state["bad"] += 1
    if state["bad"] >= cfg.nan_patience:
        raise MeltrError(f"train {cfg.method}/{cfg.model}: loss not finite for {state['bad']} consecutive steps "
                         f"(last at step {step}: {dict(zip(combiner.loss_names, r.losses.tolist()))}); "
                         "expected finite losses - lower train.lr or check the features")
    state["log"].append({"step": step, "skipped": "non-finite loss"})


def _log_entry(step: int, r: StepResult, combiner) -> dict:
    """The train log's record of a step: losses, MELTR's effective weights (computed outside the timed
    region) and the meta step's stats."""
    weights = combiner.weights(r.losses)
    entry = {"step": step, "loss": float(r.total), "step_ms": r.step_ms, "meta": r.meta is not None,
             "losses": {n: float(x) for n, x in zip(combiner.loss_names, r.losses)},
             "weights": {n: float(w) for n, w in zip(combiner.loss_names, weights)}}
    if r.meta:
        entry.update(r.meta)
    return entry


def _write_outputs(out: Path, cfg: TrainConfig, data: TaskData, weights: dict, combiner, log: list,
                   throughput: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ckpt = {"model": weights, "combiner": combiner.state_dict(), "config": asdict(cfg),
            "feature_dim": data.store.dim, "frames": data.store.frames, "vocab_size": data.tokenizer.vocab_size,
            "family": data.family, "answers": data.answers,
            "train_answer_mean": float(np.mean([r["answer"] for r in data.records])) if data.family == "count"
            else None}
    with atomic_path(out / "model.pt") as tmp:
        torch.save(ckpt, tmp)
    write_jsonl(out / "train_log.jsonl", log)
    write_json(out / "throughput.json", throughput)


def _throughput(cfg: TrainConfig, timed: list[tuple[float, float | None]], period: int, device: torch.device,
                world: int, peak_mb: float) -> dict:
    window = training_window(timed, cfg.timing_warmup, period)
    meta = [m for _, m in window if m is not None]
    return {
        "method": cfg.method, "model": cfg.model, "dataset": cfg.dataset, "task": cfg.task,
        **window_stats([t for t, _ in window], cfg.batch_size * world),
        "world_size": world, "meta_step_ms": median_or_none(meta), "peak_mem_mb": float(peak_mb),
        "memory": "train/memory.py (CPU: transients reused from the heap may be under-counted)",
        "device": device_name(device), "precision": resolve_precision(cfg.precision, device),
        "batch_size": cfg.batch_size, "timing_warmup": cfg.timing_warmup,
        "estimator": cfg.meltr.get("estimator", MeltrConfig.estimator) if cfg.method == "meltr" else None,
        "meta_batches": cfg.meltr.get("meta_batches", MeltrConfig.meta_batches) if cfg.method == "meltr" else None,
    }
