"""`meltr bench scaling`: what MELTR costs against finetune and multitask as the model grows.

For every batch size, adapter setting (full or LoRA) and size preset (smallest first), each method variant
trains a fresh model of that size on the same synthetic batches, whose lengths are the preset's `frames`
and `words` (no padding). A point is one (size, batch, adapters, method, k) and records: parameters,
samples/s, step time (median, IQR), peak memory, FLOPs per step (torch.utils.flop_counter), MFU, the meta
step's time and the attention kernels seen. An out-of-memory error is a result: it is recorded with the
stage it happened in, and the sweep goes on.

Protocol (hypergradient-cost.md §5):
- warm-up steps (>= 2 max(k), covering meta steps, allocator growth and autotuning) are excluded;
- MELTR is timed in windows of exactly k steps (one meta step each) for every k on the same model (k only
  decides when a meta step runs), the baselines in windows of max(k) steps;
- on a GPU: bf16 autocast, CUDA events recorded without synchronisation inside a window, a synchronisation
  at each window's end, `torch.cuda.max_memory_allocated` after a reset at the end of warm-up; methods run
  one after the other (a 3B model's optimiser state leaves no room for a second one);
- on a CPU: fp32, methods interleaved (one window each per round, so drifts of the machine fall on all
  alike), peak RSS sampled every millisecond with malloc returning freed blocks to the OS;
- memory counts everything the method keeps: weights, gradients, optimiser state, activations, MELTR;
- MFU = counted FLOPs of the steps in a window / window time / peak FLOP/s of one device, where the peak is
  measured by a large matmul in the same run (or given). The meta step's FLOPs are included (hardware
  MFU); the baselines' MFU times the throughput ratio gives the "effective" MFU of hypergradient-cost.md.

Under torchrun every rank runs the same sweep on its own batches (DDP, or FSDP2 with `parallel: fsdp`);
samples/s are global, memory and MFU per device, and rank 0 writes the JSON.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from tqdm import tqdm

from .combiners import build_combiner
from .data.batching import Batcher, Tokenized
from .errors import MeltrError
from .io import write_json
from .meta.hypergradient import ESTIMATORS, NEEDS_MATH_SDPA
from .models.adapters import ADAPTERS, trainable_count
from .models.presets import PRESETS, get_preset, parameter_count
from .models.tokenizer import load_tokenizer
from .models.univl import PRIMARY, count_parameters, task_losses
from .parallel import init_from_env, is_distributed, wrap
from .train import build_model, device_name, run_step

logger = logging.getLogger(__name__)

BASELINES = ("finetune", "multitask")
# MELTR with each estimator on the official replayed meta batches, and the two that reuse the step's batch.
MELTR_VARIANTS = tuple(f"meltr/{e}" for e in ESTIMATORS) + ("meltr/jvp@current", "meltr/finite_difference@current")
METHODS = BASELINES + MELTR_VARIANTS


def method_config(name: str, meltr_cfg: dict) -> tuple[str, dict]:
    """'meltr/jvp@current' -> ('meltr', {..., estimator: jvp, meta_batches: current})."""
    if name in BASELINES:
        return name, dict(meltr_cfg)
    if name not in MELTR_VARIANTS:
        raise MeltrError(f"scaling method {name!r}: expected one of {', '.join(METHODS)}")
    estimator, _, batches = name.removeprefix("meltr/").partition("@")
    return "meltr", {**meltr_cfg, "estimator": estimator, "meta_batches": batches or "replay"}


@dataclass
class ScalingConfig:
    sizes: list[str] = field(default_factory=lambda: ["micro", "tiny", "small", "mini"])
    methods: list[str] = field(default_factory=lambda: ["finetune", "multitask", "meltr/double_backward",
                                                        "meltr/finite_difference@current"])
    ks: list[int] = field(default_factory=lambda: [3])
    batch_sizes: list[int] = field(default_factory=lambda: [8])
    adapters: list[str] = field(default_factory=lambda: ["none"])
    rounds: int = 4                 # timed windows per method (and per k)
    warmup: int | None = None       # steps before timing; None: max(2 max(k), 6)
    feature_dim: int = 1024         # frame features (UniVL's S3D width)
    loss_set: str = "univl8"
    lora_rank: int = 8
    precision: str = "auto"         # auto (bf16 autocast on a GPU, fp32 on CPU) | fp32 | bf16
    peak_tflops: float | None = None  # one device's peak; None: measured by a large matmul in this run
    parallel: str = "ddp"           # under torchrun: ddp | fsdp
    time_budget_s: float | None = None  # points left when it runs out are recorded as skipped
    device: str = "auto"
    seed: int = 0
    meltr: dict = field(default_factory=dict)

    def __post_init__(self):
        for size in self.sizes:
            get_preset(size)
        for m in self.methods:
            method_config(m, {})
        for a in self.adapters:
            if a not in ADAPTERS:
                raise MeltrError(f"scaling adapters {a!r}: expected one of {', '.join(ADAPTERS)}")
        if not self.ks or min(self.ks) < 1 or not self.batch_sizes or min(self.batch_sizes) < 2:
            raise MeltrError("scaling: expected ks >= 1 and batch sizes >= 2")
        if self.rounds < 1:
            raise MeltrError("scaling.rounds: expected >= 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise MeltrError(f"scaling.precision {self.precision!r}: expected auto, fp32 or bf16")
        if self.parallel not in ("ddp", "fsdp"):
            raise MeltrError(f"scaling.parallel {self.parallel!r}: expected ddp or fsdp")


# Named grids (`meltr bench scaling --grid NAME`; flags override): the CPU one is the default run's share,
# the GPU one fits 8 minutes on one H100 or H200 (time_budget_s stops it early, recording what is left).
GRIDS = {
    "cpu": {},
    # Sized from the H100 runs in results/scaling/h100: 100m-1b with six methods, four k and two rounds took
    # 350 s; 3b-7b with these four methods, two k and one round, full and LoRA, 180 s.
    "gpu": {"sizes": ["100m", "300m", "1b", "3b", "7b"],
            "methods": ["finetune", "multitask", "meltr/double_backward", "meltr/finite_difference@current"],
            "ks": [3, 10], "batch_sizes": [8], "adapters": ["none", "lora"], "rounds": 1, "warmup": 6,
            "time_budget_s": 420},
}


# ----------------------------------------------------------------------------------------- inputs
def scaling_batches(n: int, batch_size: int, frames: int, words: int, dim: int, seed: int,
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


# ----------------------------------------------------------------------------------------- device
def measure_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul: the best this device does on dense math in this precision."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 10 if device.type == "cuda" else 4
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text \
        or "can't allocate memory" in text


# ----------------------------------------------------------------------------------------- one method
class SizedRun:
    """One method variant on one model: built, warmed up, measured; stepped a window at a time."""

    def __init__(self, name: str, size: str, adapters: str, batches: list[dict], cfg: ScalingConfig,
                 device: torch.device):
        self.name, self.batches, self.device, self.cfg = name, batches, device, cfg
        method, meltr_cfg = method_config(name, cfg.meltr)
        self.is_meltr = method == "meltr"
        preset = get_preset(size)
        tok_vocab = load_tokenizer().vocab_size
        with torch.device(device):  # initialised where it lives: a 7B model never passes through the host
            model = build_model(size, cfg.feature_dim, tok_vocab, preset.words, preset.frames, cfg.seed,
                                adapters=adapters, lora_rank=cfg.lora_rank)
        self.params_total = count_parameters(model)
        self.params_trainable = trainable_count(model)
        self.model = wrap(model.train(), device, cfg.parallel)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.combiner = build_combiner(method, list(task_losses("retrieval", cfg.loss_set)), PRIMARY["retrieval"],
                                       {**meltr_cfg, "k": max(cfg.ks), "seed": cfg.seed}).to(device)
        self.opt = torch.optim.AdamW(self.params, lr=1e-5)
        self.step = 0
        self.times: dict = {}       # k (None for the baselines) -> step times, ms
        self.meta_times: dict = {}

    def autocast(self):
        bf16 = self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def set_k(self, k: int) -> None:
        if self.is_meltr:
            self.combiner.cfg.k = k

    def run(self, n: int, k: int | None = None, record: bool = True) -> None:
        results = []
        for _ in range(n):
            self.step += 1
            batch = self.batches[(self.step - 1) % len(self.batches)]
            with self.autocast():
                results.append(run_step(self.model, self.combiner, self.opt, self.params, batch, self.step,
                                        self.cfg.seed + self.step, self.device, events=True))
        _sync(self.device)  # one synchronisation per window
        if record:
            for r in results:
                r.resolve()
                if r.step_ms is None:
                    raise MeltrError(f"scaling {self.name}: loss not finite at step {self.step}")
                self.times.setdefault(k, []).append(r.step_ms)
                if r.meta is not None:
                    self.meta_times.setdefault(k, []).append(r.meta_ms)

    def one_step_flops(self, meta: bool) -> float:
        """FLOPs of one step (with or without its meta step), counted with attention as plain math."""
        self.set_k(1 if meta else 10**9)
        with OpCount() as counter, sdpa_kernel(SDPBackend.MATH):
            self.run(1, record=False)
        return float(counter.flops)

    def attention_kernels(self) -> list[str]:
        """The fused SDPA kernels one training step dispatches (flash, efficient, cudnn); "math" when none
        is: the math path decomposes into matmuls before it reaches the dispatcher."""
        self.set_k(10**9)
        with OpCount() as counter:
            self.run(1, record=False)
        return sorted({kind for op, kind in _SDPA_OPS.items() if any(n.startswith(op) for n in counter.ops)}) \
            or ["math"]


class OpCount(TorchDispatchMode):
    """The aten ops a step runs and their FLOPs by torch.utils.flop_counter's per-op formulas, without
    FlopCounterMode's module tracker, whose backward hooks refuse the meta step's autograd.grad on leaves."""

    def __init__(self):
        super().__init__()
        self.flops, self.ops = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.add(func._overloadpacket.__name__)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


# Dispatcher names of the fused attention kernels (the CPU flash kernel is "..._flash_attention_for_cpu").
_SDPA_OPS = {"_scaled_dot_product_flash_attention": "flash", "_scaled_dot_product_efficient_attention": "efficient",
             "_scaled_dot_product_cudnn_attention": "cudnn", "_flash_attention": "flash",
             "_efficient_attention": "efficient"}


def peak_memory_mb(run: SizedRun, steps: int, base_mb: float) -> float:
    """Peak memory of a method: weights, gradients, optimiser state, activations and MELTR.

    GPU: torch.cuda.max_memory_allocated over `steps` steps after a reset, less `base_mb` (what was
    allocated before the model was built). CPU has no allocator statistics: the weights, optimiser state
    and MELTR are counted exactly from their tensors, and the step's transient peak (gradients,
    activations, the meta step's buffers) is the sampled RSS increase while malloc serves every block of
    64 KiB or more from mmap, so that freed memory leaves the RSS and reused memory does not hide."""
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
        run.run(steps, record=False)
        return torch.cuda.max_memory_allocated(run.device) / 2**20 - base_mb
    from .bench import PeakRSS

    run.opt.zero_grad(set_to_none=True)
    gc.collect()
    _mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
    try:
        with PeakRSS() as rss:
            run.run(steps, record=False)
    finally:  # back to heap allocation that keeps freed memory for reuse, as glibc's adaptive mode does
        _mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        _mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
    return _resident_state_mb(run) + rss.mb


def _resident_state_mb(run: SizedRun) -> float:
    """Bytes that live across steps: model, optimiser state, MELTR and its optimiser (shared tensors once)."""
    tensors = list(run.model.parameters()) + list(run.combiner.parameters())
    for opt in (run.opt, getattr(run.combiner, "meta_opt", None)):
        if opt is not None:
            tensors += [t for state in opt.state.values() for t in state.values() if torch.is_tensor(t)]
    tensors = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]  # FSDP2: this rank's shards
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values()) / 2**20


# glibc: blocks of at least M_MMAP_THRESHOLD come from mmap and go back to the OS on free; the heap's top is
# given back above M_TRIM_THRESHOLD. Setting either turns glibc's adaptive thresholds off, so set both.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _mallopt(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(option, value)


# ----------------------------------------------------------------------------------------- the sweep
def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_size(size: str, batch_size: int, adapters: str, cfg: ScalingConfig, device: torch.device,
                 peak_flops: float, world: int, rank: int) -> list[dict]:
    preset = get_preset(size)
    kmax = max(cfg.ks)
    warmup = cfg.warmup if cfg.warmup is not None else max(2 * kmax, 6)
    base = {"size": size, "params": parameter_count(size, cfg.feature_dim), "batch_size": batch_size,
            "global_batch_size": batch_size * world, "adapters": adapters, "frames": preset.frames,
            "words": preset.words, "hidden": preset.hidden}
    interleave = device.type != "cuda"
    rows, runs = [], {}
    batches = None
    try:
        batches = scaling_batches(max(12, 2 * kmax), batch_size, preset.frames, preset.words, cfg.feature_dim,
                                  cfg.seed + 1000 * rank, device)
    except Exception as exc:  # the inputs alone do not fit: every method of this cell is out of memory
        if not _is_oom(exc):
            raise
        return [{**base, "method": m, "oom": True, "oom_stage": "inputs", "error": _first_line(exc)}
                for m in cfg.methods]

    def timed(run: SizedRun) -> None:
        for k in (cfg.ks if run.is_meltr else [None]):
            run.set_k(k or kmax)
            run.run(k or kmax, k)

    for name in cfg.methods:
        stage, info, oom = "build", {}, None
        base_mb = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        try:
            run = SizedRun(name, size, adapters, batches, cfg, device)
            info = {"params": run.params_total, "trainable_params": run.params_trainable}
            stage = "warm-up"
            run.run(warmup, record=False)
            stage = "memory"
            info["peak_mem_mb"] = peak_memory_mb(run, kmax + 1, base_mb)  # holds at least one meta step
            stage = "flops"
            info.update(_counted_flops(run))
            info["attention_kernel"] = run.attention_kernels()
            if run.is_meltr:  # the estimators that differentiate twice run their meta step on math attention
                est = run.combiner.cfg.estimator
                info["meta_attention_kernel"] = ["math"] if est in NEEDS_MATH_SDPA else info["attention_kernel"]
            stage = "timing"
            if not interleave:
                for _ in range(cfg.rounds):
                    timed(run)
        except Exception as exc:
            if _is_oom(exc):
                oom = {"oom": True, "oom_stage": stage, "error": _first_line(exc)}
            else:  # any other failure is recorded too (the sweep goes on) and fails the command at the end
                logger.exception("%s/%s batch %d: failed during %s", size, name, batch_size, stage)
                oom = {"oom": False, "failed": stage, "error": _first_line(exc)}
        if oom:  # outside the except block: its traceback no longer pins the model's tensors
            logger.warning("%s/%s batch %d: %s during %s", size, name, batch_size,
                           "out of memory" if oom["oom"] else "error", stage)
            rows.append({**base, **info, "method": name, **oom})
            run = None
            _free()
            continue
        if not interleave:
            rows.extend(_rows(name, run, info, base, cfg, peak_flops, world))
            run = None
            _free()
        else:
            runs[name] = (run, info)
    if interleave:
        for _ in range(cfg.rounds):
            for run, _info in runs.values():
                timed(run)
        for name, (run, info) in runs.items():
            rows.extend(_rows(name, run, info, base, cfg, peak_flops, world))
    runs = None
    _free()
    return _add_ratios(rows)


def _counted_flops(run: SizedRun) -> dict:
    """FLOPs of a step and of its meta step. Counting runs attention as math, whose O(S^2) buffers can
    exceed what the method itself needs: then the FLOPs are unknown (None), not the method out of memory."""
    try:
        step = run.one_step_flops(meta=False)
        meta = run.one_step_flops(meta=True) - step if run.is_meltr else 0.0
    except Exception as exc:
        if not _is_oom(exc):
            raise
        step = meta = None
    if step is None:
        _free()
        return {"flops_step": None, "flops_meta": None, "flops_note": "out of memory while counting"}
    return {"flops_step": step, "flops_meta": meta}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _rows(name: str, run: SizedRun, info: dict, base: dict, cfg: ScalingConfig, peak_flops: float,
          world: int) -> list[dict]:
    method, mcfg = method_config(name, cfg.meltr)
    rows = []
    for k, times in run.times.items():
        t = np.asarray(times)
        flops = info["flops_step"] + (info["flops_meta"] / k if k else 0.0) if info["flops_step"] is not None \
            else None
        meta = run.meta_times.get(k)
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        rows.append({
            **base, **info, "method": name, "family": method, "k": k,
            "estimator": mcfg.get("estimator") if method == "meltr" else None,
            "meta_batches": mcfg.get("meta_batches", "replay") if method == "meltr" else None,
            "oom": False, "steps_timed": len(t),
            "step_ms": float(med), "step_ms_iqr": float(q3 - q1), "step_ms_mean": float(t.mean()),
            "samples_per_s": float(len(t) * base["batch_size"] * world / (t.sum() / 1e3)),
            "meta_step_ms": float(np.median(meta)) if meta else None,
            "flops_per_step": flops,
            "mfu": flops / (t.mean() / 1e3) / peak_flops if flops is not None else None,
        })
    return rows


def _add_ratios(rows: list[dict]) -> list[dict]:
    """MELTR's throughput and memory against each baseline of the same cell (the baselines have no k)."""
    ok = {r["method"]: r for r in rows if "samples_per_s" in r and r.get("k") is None}
    for r in rows:
        if "samples_per_s" not in r or r.get("k") is None:
            continue
        for b in BASELINES:
            if b in ok:
                r[f"ratio_vs_{b}"] = r["samples_per_s"] / ok[b]["samples_per_s"]
                r[f"mem_ratio_vs_{b}"] = r["peak_mem_mb"] / ok[b]["peak_mem_mb"] if ok[b]["peak_mem_mb"] > 0 else None
    return rows


def resolve_scaling_device(name: str) -> tuple[torch.device, int, int]:
    rank, world = init_from_env()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and is_distributed():
        import os

        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device, rank, world


def sweep(cfg: ScalingConfig, out_json: str | None = None, progress: bool = True) -> dict:
    device, rank, world = resolve_scaling_device(cfg.device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if cfg.peak_tflops:
        peak, peak_source = cfg.peak_tflops * 1e12, "given (scaling.peak_tflops)"
    else:
        peak = measure_peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
        peak_source = f"measured: {'8192' if device.type == 'cuda' else '1024'}^3 matmul, " \
                      f"{'bf16' if bf16 else 'fp32'}, this run"
    result = {"device": device_name(device), "torch": torch.__version__, "world_size": world,
              "parallel": cfg.parallel if world > 1 else "none", "precision": "bf16 autocast" if bf16 else "fp32",
              "peak_flops": peak, "peak_flops_source": peak_source,
              "timing": "CUDA events, one synchronisation per window; methods one after another"
              if device.type == "cuda" else "wall clock per window; methods interleaved, one window each per round",
              "memory": "torch.cuda.max_memory_allocated after a reset at the end of warm-up, over the level "
              "before the model was built" if device.type == "cuda" else
              "weights, optimiser state and MELTR counted from their tensors, plus the step's peak RSS increase "
              "(sampled every ms, malloc serving blocks >= 64 KiB from mmap)",
              "config": asdict(cfg), "points": []}
    sizes = sorted(cfg.sizes, key=lambda s: parameter_count(s, cfg.feature_dim))
    cells = [(b, a, s) for b in cfg.batch_sizes for a in cfg.adapters for s in sizes]
    start = time.monotonic()
    bar = tqdm(cells, desc="bench scaling", unit="size", disable=not progress or rank != 0)
    for batch_size, adapters, size in bar:
        bar.set_postfix(size=size, batch=batch_size, adapters=adapters)
        if cfg.time_budget_s is not None and time.monotonic() - start > cfg.time_budget_s:
            result["points"] += [{"size": size, "batch_size": batch_size, "adapters": adapters, "method": m,
                                  "params": parameter_count(size, cfg.feature_dim), "skipped": "time budget"}
                                 for m in cfg.methods]
            continue
        result["points"] += measure_size(size, batch_size, adapters, cfg, device, peak, world, rank)
        result["elapsed_s"] = time.monotonic() - start
        if out_json and rank == 0:  # after every cell: a sweep cut short keeps what it measured
            write_json(out_json, result)
    return result


def format_table(result: dict) -> str:
    lines = [f"bench scaling: {result['device']}, {result['precision']}, peak {result['peak_flops'] / 1e12:.1f} "
             f"TFLOP/s ({result['peak_flops_source']}), world size {result['world_size']}",
             f"{'size':<7}{'params':>9}{'batch':>6}{'adapt':>6} {'method':<33}{'k':>3}{'samples/s':>11}"
             f"{'step ms':>9}{'iqr':>7}{'meta ms':>9}{'peak MB':>10}{'GFLOP':>9}{'MFU%':>6}{'/ft':>6}{'/multi':>7}"]
    for r in result["points"]:
        head = f"{r['size']:<7}{r['params'] / 1e6:>8.1f}M{r['batch_size']:>6}{r['adapters']:>6} {r['method']:<33}"
        if r.get("skipped") or r.get("oom") or r.get("failed"):
            lines.append(head + (f"  skipped ({r['skipped']})" if r.get("skipped") else
                                 f"  out of memory ({r['oom_stage']})" if r.get("oom") else
                                 f"  FAILED in {r['failed']}: {r['error']}"))
            continue
        meta = f"{r['meta_step_ms']:.1f}" if r.get("meta_step_ms") else ""
        ratio = "".join(f"{r[key]:>{w}.2f}" if r.get(key) is not None else " " * w
                        for key, w in (("ratio_vs_finetune", 6), ("ratio_vs_multitask", 7)))
        lines.append(head + f"{r['k'] if r['k'] else '':>3}{r['samples_per_s']:>11.1f}{r['step_ms']:>9.1f}"
                     f"{r['step_ms_iqr']:>7.1f}{meta:>9}{r['peak_mem_mb']:>10.0f}"
                     + (f"{r['flops_per_step'] / 1e9:>9.1f}{100 * r['mfu']:>6.1f}" if r["mfu"] is not None else " " * 15)
                     + ratio)
    return "\n".join(lines)


__all__ = ["ScalingConfig", "sweep", "format_table", "METHODS", "PRESETS"]
