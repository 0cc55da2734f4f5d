"""`meltr bench scaling`: what MELTR costs against finetune and multitask as the model grows.

For every batch size, adapter setting (full or LoRA) and size preset (smallest first), each method variant
trains a fresh model of that size on the same synthetic batches, whose lengths are the preset's `frames`
(times `tokens_per_frame` for a VideoLLM) and `words` (no padding). Both model families run the task a
fine-tune of that family is typically about: the UniVL family text-to-video retrieval (its eight losses), the
VideoLLM family captioning (`lm` on the caption after the visual prefix, and its four auxiliaries; see
`BENCH_TASK`). A point is one (size, batch, adapters, method, k) and records: parameters,
samples/s, step time (median, IQR), peak memory, FLOPs per step (torch.utils.flop_counter), MFU, the meta
step's time, the attention kernels seen, and for MELTR its ratios to each baseline with their spread. An
out-of-memory error is a result: it is recorded with the stage it happened in, and the sweep goes on.

Protocol (hypergradient-cost.md §5), through the one runner (bench/runner.py):
- every method of a cell is built, warmed up (>= 2 max(k) steps: meta steps, allocator growth, autotuning;
  never timed), measured for memory and FLOPs, then all are timed interleaved: rounds of one window per
  method and k (MELTR: exactly k steps, one meta step; baselines: max(k) steps), the order rotated between
  rounds; MELTR is timed at every k on the same model (k only decides when a meta step runs);
- a GPU runs bf16 autocast (`precision: auto`) with CUDA events and one synchronisation per window; a CPU
  fp32 with the wall clock;
- when the methods of a cell do not fit on the device together, the cell is measured again one method at a
  time and its points say `interleaved: false`;
- memory has the one meaning of train/memory.py: everything the method holds at its peak;
- MFU = counted FLOPs of a window / its time / the device's datasheet dense bf16 peak (bench/flops.py;
  a device not in the table: a matmul measured in this run, labelled). The meta step's FLOPs are included
  (hardware MFU); the baselines' MFU times the throughput ratio gives the "effective" MFU of
  hypergradient-cost.md. `mfu_vs_matmul` holds MFU against the measured matmul beside it.

Under torchrun every rank runs the same sweep on its own batches (DDP, or FSDP2 with `parallel: fsdp`);
samples/s are global, memory and MFU per device, and rank 0 writes the JSON.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from ..combiners import build_combiner
from ..config import BASELINES, ScalingConfig, method_variant
from ..io import ensure_writable, write_json
from ..meta.hypergradient import NEEDS_MATH_SDPA
from ..models.adapters import trainable_count
from ..models.build import bench_frames, build_model, count_parameters, parameter_count
from ..models.losses import primary_loss, task_losses
from ..models.presets import get_preset, model_family
from ..models.tokenizer import load_tokenizer
from ..train.device import device_name, resolve_device, resolve_precision
from ..train.memory import allocated_mb
from ..train.parallel import init_from_env, wrap
from .flops import OpCount, attention_kernels, datasheet_peak, measure_matmul_flops
from .runner import PROTOCOL, Contender, free_memory, interleave, is_oom, ratio, synthetic_batches

logger = logging.getLogger(__name__)

# Named grids (`meltr bench scaling --grid NAME`; flags override): the CPU one is the default run's share,
# the GPU one fits 8 minutes on one H100 or H200 (time_budget_s stops it early, recording what is left).
GRIDS = {
    "cpu": {},
    # Sized from the H100 runs in results/scaling/h100 (UniVL family): 100m-1b with six methods, four k and two
    # rounds took 350 s; 3b-7b with these four methods, two k and one round, full and LoRA, 180 s. The VideoLLM
    # sizes (1,152 tokens per sample from vllm-1b on) have not run on a GPU yet: time_budget_s records what
    # they leave undone as skipped, and out-of-memory points as results.
    "gpu": {"sizes": ["100m", "1b", "3b", "vllm-500m", "vllm-1b", "vllm-3b", "vllm-8b"],
            "methods": ["finetune", "multitask", "meltr/double_backward", "meltr/finite_difference@current"],
            "ks": [3], "batch_sizes": [8], "adapters": ["none", "lora"], "rounds": 3, "warmup": 6,
            "time_budget_s": 420},
}


# The task each model family is benchmarked on (see the module docstring).
BENCH_TASK = {"univl": "retrieval", "videollm": "captioning"}


def build_contender(name: str, size: str, adapters: str, batches: list[dict], cfg: ScalingConfig,
                    device: torch.device, world: int) -> Contender:
    """One method variant on a fresh model of this size, initialised where it lives (a 7B model never passes
    through the host)."""
    method, meltr_cfg = method_variant(name, cfg.meltr)
    preset, family = get_preset(size), model_family(size)
    with torch.device(device):
        model = build_model(size, cfg.feature_dim, load_tokenizer().vocab_size, preset.words, bench_frames(size),
                            cfg.seed, adapters=adapters, lora_rank=cfg.lora_rank, checkpointing=cfg.checkpointing)
    params_total, params_trainable = count_parameters(model), trainable_count(model)
    model = wrap(model.train(), device, cfg.parallel)
    task = BENCH_TASK[family]
    combiner = build_combiner(method, list(task_losses(task, cfg.loss_set, family)), primary_loss(task, family),
                              {**meltr_cfg, "k": max(cfg.ks), "seed": cfg.seed}).to(device)
    c = Contender(name, model, combiner, batches, device, cfg.precision, lr=1e-5, seed=cfg.seed,
                  samples_per_step=len(batches[0]["video"]) * world)
    c.info = {"params": params_total, "trainable_params": params_trainable}
    return c


def count_flops(c: Contender) -> dict:
    """FLOPs of a step and of its meta step, counted with attention as plain math, and the attention kernels
    a step really dispatches. Counting on math attention can need more memory than the method itself: then
    the FLOPs are unknown (None), not the method out of memory."""
    kmax = c.combiner.cfg.k if c.is_meltr else None

    def one_step(meta: bool, math: bool) -> OpCount:
        c.set_k(1 if meta else 10**9)
        with OpCount() as counter, (sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext()):
            c.run(1)
        return counter

    info = {"attention_kernel": attention_kernels(one_step(False, False).ops)}
    if c.is_meltr:
        est = c.combiner.cfg.estimator
        info["meta_attention_kernel"] = ["math"] if est in NEEDS_MATH_SDPA else info["attention_kernel"]
    try:
        step = float(one_step(False, True).flops)
        meta = float(one_step(True, True).flops) - step if c.is_meltr else 0.0
        info.update(flops_step=step, flops_meta=meta)
    except Exception as exc:
        if not is_oom(exc):
            raise
        free_memory()
        info.update(flops_step=None, flops_meta=None, flops_note="out of memory while counting")
    if kmax:
        c.set_k(kmax)
    return info


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _measure(methods: list[str], size: str, batch_size: int, adapters: str, cfg: ScalingConfig,
             device: torch.device, peak: dict, world: int, rank: int, base: dict) -> list[dict]:
    """Build, warm up and measure every method of `methods`, then time them interleaved."""
    preset, kmax = get_preset(size), max(cfg.ks)
    warmup = cfg.warmup if cfg.warmup is not None else max(2 * kmax, 6)
    try:
        batches = synthetic_batches(max(12, 2 * kmax), batch_size, bench_frames(size), preset.words, cfg.feature_dim,
                                    cfg.seed + 1000 * rank, device)
    except Exception as exc:  # the inputs alone do not fit: every method of this cell is out of memory
        if not is_oom(exc):
            raise
        return [{**base, "method": m, "oom": True, "oom_stage": "inputs", "error": _first_line(exc)} for m in methods]
    rows, contenders = [], {}
    for name in methods:
        stage, info, failure = "build", {}, None
        base_mb = allocated_mb(device)
        try:
            c = build_contender(name, size, adapters, batches, cfg, device, world)
            info = dict(c.info)
            stage = "warm-up"
            c.set_k(kmax)
            c.run(warmup)
            stage = "memory"
            info["peak_mem_mb"] = c.peak_memory_mb(kmax + 1, base_mb)  # holds at least one meta step
            stage = "flops"
            info.update(count_flops(c))
        except Exception as exc:
            if not is_oom(exc):  # any other failure is recorded too (the sweep goes on) and fails the command
                logger.exception("%s/%s batch %d: failed during %s", size, name, batch_size, stage)
            failure = {"oom": True, "oom_stage": stage} if is_oom(exc) else {"oom": False, "failed": stage}
            failure.update(error=_first_line(exc), oom_beside_others=bool(contenders))
        if failure:  # outside the except block: its traceback no longer pins the model's tensors
            logger.warning("%s/%s batch %d: %s during %s", size, name, batch_size,
                           "out of memory" if failure["oom"] else "error", stage)
            rows.append({**base, **info, "method": name, **failure})
            c = None
            free_memory()
            continue
        contenders[name] = (c, info)
    try:
        interleave({n: c for n, (c, _) in contenders.items()}, cfg.ks, cfg.rounds, warmup=0)
    except Exception as exc:
        if not is_oom(exc):
            raise
        rows += [{**base, **info, "method": n, "oom": True, "oom_stage": "timing", "error": _first_line(exc),
                  "oom_beside_others": len(contenders) > 1} for n, (_, info) in contenders.items()]
        contenders = {}
    rows += _rows(contenders, base, cfg, peak)
    contenders = None
    free_memory()
    return rows


def measure_size(size: str, batch_size: int, adapters: str, cfg: ScalingConfig, device: torch.device,
                 peak: dict, world: int, rank: int) -> list[dict]:
    """Every method of one cell, interleaved; one at a time if they do not fit on the device together."""
    preset = get_preset(size)
    base = {"size": size, "params": parameter_count(size, cfg.feature_dim), "batch_size": batch_size,
            "global_batch_size": batch_size * world, "adapters": adapters, "frames": preset.frames,
            "visual_tokens": bench_frames(size), "words": preset.words, "hidden": preset.hidden,
            "model_family": preset.family, "task": BENCH_TASK[preset.family]}
    rows = _measure(cfg.methods, size, batch_size, adapters, cfg, device, peak, world, rank,
                    {**base, "interleaved": True})
    if len(cfg.methods) > 1 and any(r.get("oom_beside_others") for r in rows):
        logger.warning("%s batch %d: the methods do not fit together; measuring them one at a time", size,
                       batch_size)
        free_memory()
        rows = [r for m in cfg.methods for r in _measure([m], size, batch_size, adapters, cfg, device, peak, world,
                                                         rank, {**base, "interleaved": False})]
    return add_ratios(rows)


def add_ratios(rows: list[dict]) -> list[dict]:
    """MELTR's throughput against each baseline of the same cell, round by round (bench/runner.ratio), and its
    memory ratio; every point also records its cell's finetune MFU, which says whether the ratios describe
    arithmetic or launch overhead. The baselines have no k."""
    ok = {r["method"]: r for r in rows if "samples_per_s" in r and r.get("k") is None}
    for r in rows:
        if "finetune" in ok:
            r["finetune_mfu"] = ok["finetune"].get("mfu")
        if "samples_per_s" not in r or r.get("k") is None:
            continue
        for b in BASELINES:
            if b in ok:
                rb = ratio({int(i): v for i, v in r["round_samples_per_s"].items()},
                           {int(i): v for i, v in ok[b]["round_samples_per_s"].items()})
                r.update({f"ratio_vs_{b}": rb["median"], f"ratio_vs_{b}_iqr": rb["iqr"],
                          f"ratio_vs_{b}_usable": rb["usable"],
                          f"mem_ratio_vs_{b}": r["peak_mem_mb"] / ok[b]["peak_mem_mb"] if ok[b]["peak_mem_mb"] > 0
                          else None})
    return rows


def _rows(contenders: dict, base: dict, cfg: ScalingConfig, peak: dict) -> list[dict]:
    rows = []
    for name, (c, info) in contenders.items():
        method, mcfg = method_variant(name, cfg.meltr)
        for k in (cfg.ks if c.is_meltr else [None]):
            s = c.summary(k)
            flops = info["flops_step"] + (info["flops_meta"] / k if k else 0.0) if info["flops_step"] is not None \
                else None
            mean_s = s["step_ms_mean"] / 1e3
            row = {**base, **info, "method": name, "family": method, "k": k,
                   "estimator": mcfg.get("estimator") if method == "meltr" else None,
                   "meta_batches": mcfg.get("meta_batches") if method == "meltr" else None,
                   "oom": False, **s, "flops_per_step": flops,
                   "mfu": flops / mean_s / peak["flops"] if flops is not None else None,
                   "mfu_vs_matmul": flops / mean_s / peak["matmul_flops"] if flops is not None else None,
                   "round_samples_per_s": {str(r): v for r, v in c.round_rates(k).items()}}
            rows.append(row)
    return rows


def device_peak(device: torch.device, precision: str, given_tflops: float | None) -> dict:
    """The peak MFU is taken against (datasheet, given, or measured) and the measured matmul beside it."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    matmul = measure_matmul_flops(device, dtype)
    matmul_source = f"measured: {'8192' if device.type == 'cuda' else '1024'}^3 matmul, {precision}, this run"
    sheet = datasheet_peak(device_name(device)) if device.type == "cuda" else None
    if given_tflops:
        flops, source = given_tflops * 1e12, "given (scaling.peak_tflops)"
    elif sheet:
        flops, source = sheet[0], f"datasheet dense bf16: {sheet[1]}"
    else:
        flops, source = matmul, matmul_source + " (device not in the datasheet table)"
    return {"flops": flops, "source": source, "matmul_flops": matmul, "matmul_source": matmul_source}


def sweep(cfg: ScalingConfig, out_json: str | None = None, progress: bool = True) -> dict:
    if out_json:
        ensure_writable(Path(out_json).resolve().parent)
    rank, world = init_from_env()
    device = resolve_device(cfg.device, distributed=world > 1)
    precision = resolve_precision(cfg.precision, device)
    peak = device_peak(device, precision, cfg.peak_tflops)
    result = {"device": device_name(device), "torch": torch.__version__, "world_size": world,
              "parallel": cfg.parallel if world > 1 else "none",
              "precision": "bf16 autocast" if precision == "bf16" else "fp32",
              "peak_flops": peak["flops"], "peak_flops_source": peak["source"],
              "matmul_flops": peak["matmul_flops"], "matmul_flops_source": peak["matmul_source"],
              "interleaved": True, "timing": PROTOCOL, "memory": "train/memory.py: everything the method holds "
              "at its peak (GPU: max_memory_allocated over its own steps, less what was allocated before its model; "
              "CPU: its tensors plus the sampled peak RSS rise, malloc serving blocks >= 64 KiB from mmap)",
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
             f"{'step ms':>9}{'iqr':>7}{'meta ms':>9}{'peak MB':>10}{'GFLOP':>9}{'MFU%':>6}{'/ft':>7}{'/multi':>8}",
             "(* : a ratio whose IQR over rounds exceeds a fifth of it, or with fewer than 3 rounds: unusable)"]
    for r in result["points"]:
        head = f"{r['size']:<7}{r['params'] / 1e6:>8.1f}M{r['batch_size']:>6}{r['adapters']:>6} {r['method']:<33}"
        if r.get("skipped") or r.get("oom") or r.get("failed"):
            lines.append(head + (f"  skipped ({r['skipped']})" if r.get("skipped") else
                                 f"  out of memory ({r['oom_stage']})" if r.get("oom") else
                                 f"  FAILED in {r['failed']}: {r['error']}"))
            continue
        meta = f"{r['meta_step_ms']:.1f}" if r.get("meta_step_ms") else ""
        # a ratio whose spread over rounds says nothing is starred (see bench/runner.py)
        ratio = "".join(f"{r[key]:>{w - 1}.2f}{'' if r.get(key + '_usable') else '*'}" if r.get(key) is not None
                        else " " * w for key, w in (("ratio_vs_finetune", 7), ("ratio_vs_multitask", 8)))
        lines.append(head + f"{r['k'] if r['k'] else '':>3}{r['samples_per_s']:>11.1f}{r['step_ms']:>9.1f}"
                     f"{r['step_ms_iqr']:>7.1f}{meta:>9}{r['peak_mem_mb']:>10.0f}"
                     + (f"{r['flops_per_step'] / 1e9:>9.1f}{100 * r['mfu']:>6.1f}" if r["mfu"] is not None else " " * 15)
                     + ratio)
    return "\n".join(lines)
