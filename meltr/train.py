"""One training loop for every method: finetune, multitask and MELTR differ only in their combiner.

Timing is honest: the device is synchronised before each clock read, warm-up steps are excluded, the
timed window is a multiple of the meta interval k (every window holds the same number of meta steps),
and logging work (MELTR's effective weights) happens outside the timed region.
"""
from __future__ import annotations

import logging
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .combiners import build_combiner
from .data.batching import Batcher
from .data.registry import task_family
from .data.samplers import TaskSampler, answer_vocabulary
from .errors import MeltrError
from .features.store import FeatureStore
from .data.records import read_records
from .io import atomic_path, write_json, write_jsonl
from .models.adapters import ADAPTERS, apply_adapters, trainable_count
from .models.presets import get_preset
from .models.tokenizer import load_tokenizer
from .models.univl import LOSS_SETS, PRIMARY, VideoLanguageModel, count_parameters, task_losses
from .parallel import init_from_env, unwrap, wrap
from .rng import seeded

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    method: str = "multitask"
    model: str = "tiny"
    dataset: str = "msrvtt"
    task: str = "retrieval"
    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_frac: float = 0.1        # linear LR warm-up, then linear decay to 0
    grad_clip: float = 1.0
    max_words: int = 24             # caption tokens incl. [CLS]/[SEP]
    qa_max_words: int = 48          # QA texts: option/question (+ subtitles, cut first)
    mask_prob: float = 0.15
    loss_set: str = "univl8"        # retrieval/captioning: univl5 (UniVL's five) | univl8 (MELTR-UniVL's eight)
    adapters: str = "none"          # none (full fine-tuning) | lora (peft LoRA; MELTR's meta step over the adapters)
    lora_rank: int = 8
    parallel: str = "ddp"           # under torchrun: ddp | fsdp (FSDP2; MELTR: finite_difference, replayed batches)
    timing_warmup: int = 10         # steps excluded from throughput figures
    nan_patience: int = 5           # consecutive non-finite losses before training stops
    checkpoint_every: int = 50      # steps between resumable checkpoints (0: none)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    meltr: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.checkpoint_every < 0:
            raise MeltrError(f"train.checkpoint_every: expected an integer >= 0, got {self.checkpoint_every!r}")
        for key in ("steps", "batch_size", "max_words", "qa_max_words"):
            if getattr(self, key) < 1:
                raise MeltrError(f"train.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        from .combiners import REGISTRY

        if self.method not in REGISTRY:
            raise MeltrError(f"method {self.method!r}: expected one of {sorted(REGISTRY)}")
        get_preset(self.model)  # unknown size -> MeltrError naming it
        task_family(self.dataset, self.task)  # unknown dataset or task -> MeltrError naming it
        if self.loss_set not in LOSS_SETS:
            raise MeltrError(f"train.loss_set {self.loss_set!r}: expected one of {', '.join(LOSS_SETS)}")
        if self.batch_size < 2:
            raise MeltrError("train.batch_size: expected >= 2 (contrastive losses need negatives)")
        if self.parallel not in ("ddp", "fsdp"):
            raise MeltrError(f"train.parallel {self.parallel!r}: expected ddp or fsdp")
        estimator, batches = self.meltr.get("estimator", "double_backward"), self.meltr.get("meta_batches", "replay")
        if self.parallel == "fsdp" and self.method == "meltr" and (estimator, batches) != ("finite_difference",
                                                                                             "replay"):
            raise MeltrError("train.parallel fsdp with method meltr: expected meltr.estimator finite_difference and "
                             "meltr.meta_batches replay (FSDP2 runs first-order passes only), got "
                             f"{estimator!r} and {batches!r}")
        if self.adapters not in ADAPTERS:
            raise MeltrError(f"train.adapters {self.adapters!r}: expected one of {', '.join(ADAPTERS)}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _SyncClock:
    """Wall-clock timestamps, the device synchronised before each read (the trainer's default)."""

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self):
        _sync(self.device)
        return time.perf_counter() * 1e3

    @staticmethod
    def ms(a, b) -> float:
        return b - a


class _EventClock:
    """CUDA events recorded on the stream: no synchronisation inside the step, so the GPU keeps its queue
    full; read only after the caller has synchronised (StepResult.resolve)."""

    @staticmethod
    def mark():
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @staticmethod
    def ms(a, b) -> float:
        return a.elapsed_time(b)


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
             grad_clip: float | None = None, events: bool = False) -> StepResult:
    """One training step of any method, timed: forward (under `seed`, so it can be replayed), the
    combiner, backward, the combiner's pre-update hook, the optimiser step, the combiner's meta step.
    `events` (CUDA only): time with CUDA events and no synchronisation; call .resolve() after a sync."""
    clock = _EventClock() if events and device.type == "cuda" else _SyncClock(device)
    t0 = clock.mark()
    with seeded(seed):
        losses = model(batch, combiner.loss_names)
    vec = torch.stack([losses[n] for n in combiner.loss_names])
    total = combiner(vec)
    if not torch.isfinite(total):
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
    return result if isinstance(clock, _EventClock) else result.resolve()


def text_length(cfg: dict, family: str) -> int:
    """Token budget of a task's texts: captions, or QA's option + question + subtitles."""
    return cfg["max_words"] if family in ("retrieval", "captioning") else cfg.get("qa_max_words", cfg["max_words"])


def build_model(preset_name: str, feature_dim: int, vocab_size: int, max_words: int, max_frames: int,
                seed: int, num_answers: int = 1, adapters: str = "none", lora_rank: int = 8) -> VideoLanguageModel:
    torch.manual_seed(seed)
    model = VideoLanguageModel(get_preset(preset_name), feature_dim, vocab_size, max_words, max(32, max_frames),
                               num_answers=num_answers)
    return apply_adapters(model, adapters, rank=lora_rank, alpha=2 * lora_rank)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(train_manifest: str, features_dir: str, out_dir: str, cfg: TrainConfig, progress: bool = True) -> dict:
    from pathlib import Path

    out = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # torchrun: one process per device, DDP; each rank draws its own batches, rank 0 writes the outputs.
    rank, world = init_from_env()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    family = task_family(cfg.dataset, cfg.task)
    records = read_records(train_manifest, family)  # the manifest first: its errors say more than the store's
    store = FeatureStore(features_dir)
    # Clips whose video was skipped as broken (features.on_bad_video: skip) are left out and listed.
    records, dropped = store.keep_available(records, str(train_manifest))
    tokenizer = load_tokenizer()
    answers = answer_vocabulary(records) if family == "open_ended" else []
    words = text_length(asdict(cfg), family)
    sampler = TaskSampler(records, tokenizer, family, words, cfg.batch_size, cfg.seed, answers)
    video_rows = store.get(sampler.video_ids)
    batcher = Batcher(tokenizer, cfg.mask_prob)

    model = build_model(cfg.model, store.dim, tokenizer.vocab_size, words, store.frames, cfg.seed,
                        num_answers=max(1, len(answers)), adapters=cfg.adapters, lora_rank=cfg.lora_rank)
    model.set_feature_stats(torch.from_numpy(video_rows))
    model = wrap(model.to(device).train(), device, cfg.parallel)
    sharded = world > 1 and cfg.parallel == "fsdp"
    if sharded and cfg.checkpoint_every:
        logger.warning("train.parallel fsdp: no resumable checkpoints (train.checkpoint_every is ignored)")
    combiner = build_combiner(cfg.method, list(task_losses(family, cfg.loss_set)), PRIMARY[family],
                              {"seed": cfg.seed, **cfg.meltr})
    combiner.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup_frac * cfg.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm))))
    period = getattr(getattr(combiner, "cfg", None), "k", 1)

    def make_batch(step: int) -> dict:
        index = step * world + rank  # one process: the step itself
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + index)
        return _to(sampler.batch(index, video_rows, batcher, gen), device)

    state = {"step": 0, "log": [], "step_ms": [], "meta_ms": [], "bad": 0, "resumed_from": []}
    ckpt_path = out / "checkpoint.pt"
    resumed = _load_checkpoint(ckpt_path, cfg, unwrap(model), opt, sched, combiner, device)
    if resumed:
        state = resumed
        state["resumed_from"].append(state["step"])
    log, step_ms, meta_ms = state["log"], state["step_ms"], state["meta_ms"]
    bar = tqdm(range(state["step"] + 1, cfg.steps + 1), desc=f"train {cfg.method}/{cfg.model}", unit="step",
               initial=state["step"], total=cfg.steps, disable=not progress or rank != 0)
    for step in bar:
        batch = make_batch(step - 1)
        if step == cfg.timing_warmup + 1 and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        r = run_step(model, combiner, opt, params, batch, step, cfg.seed * 1_000_003 + step, device, cfg.grad_clip)
        state["step"] = step
        if r.step_ms is None:
            state["bad"] += 1
            if state["bad"] >= cfg.nan_patience:
                raise MeltrError(f"train {cfg.method}/{cfg.model}: loss not finite for {state['bad']} consecutive steps "
                                 f"(last at step {step}: {dict(zip(combiner.loss_names, r.losses.tolist()))}); "
                                 "expected finite losses - lower train.lr or check the features")
            log.append({"step": step, "skipped": "non-finite loss"})
            continue
        state["bad"] = 0
        sched.step()
        step_ms.append(r.step_ms)
        if r.meta is not None:
            meta_ms.append(r.meta_ms)
        weights = combiner.weights(r.losses)  # for the log, outside the timed region
        entry = {"step": step, "loss": float(r.total), "step_ms": r.step_ms, "meta": r.meta is not None,
                 "losses": {n: float(x) for n, x in zip(combiner.loss_names, r.losses)},
                 "weights": {n: float(w) for n, w in zip(combiner.loss_names, weights)}}
        if r.meta:
            entry.update(r.meta)
        log.append(entry)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(r.total):.3f}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps and rank == 0 \
                and not sharded:
            _save_checkpoint(ckpt_path, cfg, unwrap(model), opt, sched, combiner, state)

    throughput = _throughput(cfg, step_ms, meta_ms, period, device, world)
    weights = _full_state_dict(model, sharded)  # FSDP2: every rank takes part in gathering the shards
    model = unwrap(model)
    if rank != 0:  # rank 0 holds the same weights (DDP) or the gathered ones (FSDP2) and writes them
        return throughput
    throughput.update(skipped_records=len(dropped), skipped_videos=sorted({r["video"] for r in dropped}))
    throughput.update(family=family, params=count_parameters(model), params_m=count_parameters(model) / 1e6,
                      trainable_params=trainable_count(model), adapters=cfg.adapters,
                      combiner_params=count_parameters(combiner))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = {"model": weights, "combiner": combiner.state_dict(), "config": asdict(cfg),
            "feature_dim": store.dim, "frames": store.frames, "vocab_size": tokenizer.vocab_size,
            "family": family, "answers": answers,
            "train_answer_mean": float(np.mean([r["answer"] for r in records])) if family == "count" else None}
    with atomic_path(out / "model.pt") as tmp:
        torch.save(ckpt, tmp)
    write_jsonl(out / "train_log.jsonl", log)
    throughput["resumed_from"] = state["resumed_from"]
    write_json(out / "throughput.json", throughput)
    ckpt_path.unlink(missing_ok=True)  # the finished outputs hold everything; nothing left to resume
    return throughput


def _full_state_dict(model, sharded: bool) -> dict:
    if not sharded:
        return unwrap(model).state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# Settings that do not change what is computed: a checkpoint stays valid across them.
_RESUME_IGNORES = ("threads", "device", "checkpoint_every", "timing_warmup")


def _fingerprint(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in _RESUME_IGNORES}


def _save_checkpoint(path, cfg, model, opt, sched, combiner, state) -> None:
    """Everything a resume needs, written atomically (a kill leaves the previous checkpoint)."""
    blob = {"fingerprint": _fingerprint(cfg), "model": model.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "combiner": combiner.state_dict(), "state": state}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_checkpoint(path, cfg, model, opt, sched, combiner, device) -> dict | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a checkpoint we cannot read is not worth dying for: start over
        logger.warning("%s: unreadable checkpoint (%s); starting from step 0", path, exc)
        return None
    if blob.get("fingerprint") != _fingerprint(cfg):
        logger.warning("%s: checkpoint of different settings; starting from step 0", path)
        return None
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["opt"])
    sched.load_state_dict(blob["sched"])
    combiner.load_state_dict(blob["combiner"])
    logger.info("%s: resuming after step %d", path, blob["state"]["step"])
    return blob["state"]


def _throughput(cfg: TrainConfig, step_ms: list[float], meta_ms: list[float], period: int,
                device: torch.device, world: int = 1) -> dict:
    times = np.array(step_ms[cfg.timing_warmup:] if len(step_ms) > cfg.timing_warmup else step_ms)
    n = max(period, (len(times) // period) * period)
    window = times[-n:] if len(times) >= n else times
    q1, med, q3 = np.percentile(window, [25, 50, 75]) if len(window) else (math.nan,) * 3
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "method": cfg.method, "model": cfg.model, "dataset": cfg.dataset, "task": cfg.task,
        "step_ms": float(med), "step_ms_iqr": float(q3 - q1),
        "samples_per_s": float(cfg.batch_size * world * len(window) / (window.sum() / 1e3)) if len(window) else math.nan,
        "world_size": world,
        "meta_step_ms": float(np.median(meta_ms)) if meta_ms else None,
        "peak_mem_mb": float(peak), "device": device_name(device), "batch_size": cfg.batch_size,
        "steps_timed": int(len(window)), "estimator": cfg.meltr.get("estimator", "double_backward")
        if cfg.method == "meltr" else None,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
