"""`meltr bench meltr-step`: what one MELTR training step costs, measured side by side in one process.

Every method trains a fresh copy of the same model (same seed) on the same pre-built batches:
finetune, multitask, and meltr with each hypergradient estimator. Windows are multiples of k so every
window holds the same number of meta steps; the device is synchronised before each clock read;
warm-up steps are excluded. Each estimator's hypergradient is also compared with `double_backward`
(the official computation) on the same state and the same meta batches.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import threading

import numpy as np
import psutil
import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from .combiners import build_combiner
from .data.batching import Batcher, tokenize
from .combiners.meltr import _trainable
from .meta.hypergradient import ESTIMATORS, NEEDS_MATH_SDPA, grads_or_zeros, hypergradient
from .models.tokenizer import load_tokenizer
from .models.univl import PRIMARY, task_losses
from .train import build_model, device_name, resolve_device, run_step

COLOURS = ["red", "green", "blue", "yellow", "white", "purple"]
SHAPES = ["circle", "square", "triangle", "cross"]
MOTIONS = ["left", "right", "up", "down"]


def synthetic_batches(n: int, batch_size: int, frames: int, dim: int, max_words: int, seed: int,
                      device: torch.device) -> list[dict]:
    """Batches shaped like the pipeline's (random features, real captions through the real tokenizer)."""
    tok = load_tokenizer()
    batcher = Batcher(tok)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        caps = [f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} moves {rng.choice(MOTIONS)}"
                for _ in range(batch_size)]
        video = torch.randn((batch_size, frames, dim), generator=gen)
        batch = batcher.make(video, tokenize(tok, caps, max_words), gen)
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _cpu_peak_mb(method: str, model_name: str, k: int, batch_shape: tuple, seed: int, meltr_cfg: dict,
                 threads: int, loss_set: str) -> float:
    """Peak memory a method's steps add on CPU, measured alone in a fresh process (see cpu_peak_mb)."""
    torch.set_num_threads(threads)
    batch_size, frames, dim, max_words = batch_shape
    dev = torch.device("cpu")
    batches = synthetic_batches(max(12, 2 * k), batch_size, frames, dim, max_words, seed, dev)
    run = MethodRun(method, batches, model_name, k, dev, seed, meltr_cfg, loss_set)
    run.run(2 * k, record=False)  # warm-up: optimiser state and one-time allocations exist afterwards
    with PeakRSS() as rss:
        run.run(2 * k, record=False)
    return rss.mb


def cpu_peak_mb(*args) -> float:
    """CPU has no allocator statistics, and freed memory is reused by whatever runs next, so each method
    runs alone in a spawned process whose allocator returns large blocks to the OS on free
    (MALLOC_MMAP_THRESHOLD_): its sampled RSS then follows the live tensors."""
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_cpu_peak_mb, args)
    finally:
        if old is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_")
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old


# (name, estimator, meta batches): the official sampling for every estimator, plus ours that reuse the
# training step's own forward.
VARIANTS = [(est, est, "replay") for est in ESTIMATORS] + [
    ("jvp@current", "jvp", "current"), ("finite_difference@current", "finite_difference", "current")]


def _fresh_model(model_name: str, batches: list[dict], seed: int, device: torch.device):
    b = batches[0]
    return build_model(model_name, b["video"].shape[-1], load_tokenizer().vocab_size, b["text_ids"].shape[1],
                       b["video"].shape[1], seed).to(device)


class MethodRun:
    """One method's model, combiner and optimiser, stepped a window at a time (its own step counter)."""

    def __init__(self, method: str, batches: list[dict], model_name: str, k: int, device: torch.device,
                 seed: int, meltr_cfg: dict, loss_set: str = "univl8"):
        self.method, self.batches, self.device, self.seed = method, batches, device, seed
        self.model = _fresh_model(model_name, batches, seed, device).train()
        self.combiner = build_combiner(method, list(task_losses("retrieval", loss_set)), PRIMARY["retrieval"],
                                       {**meltr_cfg, "k": k, "seed": seed}).to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.step, self.times, self.meta_times = 0, [], []

    def run(self, n: int, record: bool = True) -> None:
        for _ in range(n):
            self.step += 1
            batch = self.batches[(self.step - 1) % len(self.batches)]
            r = run_step(self.model, self.combiner, self.opt, self.params, batch, self.step, self.seed + self.step,
                         self.device)
            if record:
                self.times.append(r.step_ms)
                if r.meta is not None:
                    self.meta_times.append(r.meta_ms)

    def summary(self, batch_size: int) -> dict:
        window = np.array(self.times)
        return {"step_ms": float(np.median(window)),
                "step_ms_iqr": float(np.subtract(*np.percentile(window, [75, 25]))),
                "samples_per_s": float(len(window) * batch_size / (window.sum() / 1e3)),
                "meta_step_ms": float(np.median(self.meta_times)) if self.meta_times else None}


def peak_memory_mb(method: str, batches: list[dict], model_name: str, k: int, device: torch.device, seed: int,
                   meltr_cfg: dict, loss_set: str = "univl8") -> float:
    """Peak memory of one method measured with nothing else resident: on a GPU max_memory_allocated over
    2k steps after a 2k-step warm-up; on CPU see cpu_peak_mb."""
    if device.type != "cuda":
        b = batches[0]
        shape = (b["video"].shape[0], b["video"].shape[1], b["video"].shape[2], b["text_ids"].shape[1])
        return cpu_peak_mb(method, model_name, k, shape, seed, meltr_cfg, torch.get_num_threads(), loss_set)
    run = MethodRun(method, batches, model_name, k, device, seed, meltr_cfg, loss_set)
    run.run(2 * k, record=False)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run.run(2 * k, record=False)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    del run
    torch.cuda.empty_cache()
    return peak


def estimator_accuracy(batches: list[dict], model_name: str, seed: int, device: torch.device,
                       meltr_cfg: dict, loss_set: str = "univl8") -> dict:
    """Each variant's hypergradient against double_backward on the same state and the same meta batches
    (replay variants: B_t, B_v = two different batches; @current: both the step's own batch)."""
    model = _fresh_model(model_name, batches, seed, device).eval()
    combiner = build_combiner("meltr", list(task_losses("retrieval", loss_set)), PRIMARY["retrieval"],
                              {**meltr_cfg, "seed": seed})
    combiner.to(device)
    names, params = _trainable(model)
    opts = combiner._options()

    def task_losses_on(batch):
        return combiner._task_losses(model, names, batch, seed)

    def val_loss_on(batch):
        return lambda ps: functional_call(model, dict(zip(names, ps)), (batch, (combiner.primary,)))[combiner.primary]

    def flat(g):
        return torch.cat([x.reshape(-1) for x in g]).double()

    with sdpa_kernel(SDPBackend.MATH):
        refs = {"replay": flat(hypergradient(combiner.net, task_losses_on(batches[0]), val_loss_on(batches[1]),
                                             params, "double_backward")),
                "current": flat(hypergradient(combiner.net, task_losses_on(batches[0]), val_loss_on(batches[0]),
                                              params, "double_backward"))}
    out = {}
    for name, est, mode in VARIANTS:
        with sdpa_kernel(SDPBackend.MATH):  # accuracy only: the kernel does not change the value
            if mode == "replay":
                g = hypergradient(combiner.net, task_losses_on(batches[0]), val_loss_on(batches[1]), params, est,
                                  **opts)
            else:  # what the training step hands over: L(W) and v from one forward and its graph
                vec = task_losses_on(batches[0])(params)
                v = grads_or_zeros(vec[0], params)
                g = hypergradient(combiner.net, task_losses_on(batches[0]), None, params, est, v=v,
                                  losses=vec.detach(), **opts)
        g, ref = flat(g), refs[mode]
        out[name] = {"cosine_vs_double_backward": float(torch.nn.functional.cosine_similarity(g, ref, dim=0)),
                     "rel_err_vs_double_backward": float((g - ref).norm() / ref.norm().clamp(min=1e-30))}
    return out


def bench_meltr_step(model: str = "tiny", k: int = 3, steps: int = 30, warmup: int | None = None,
                     batch_size: int = 16, frames: int = 8, feature_dim: int = 320, max_words: int = 24,
                     device: str = "auto", seed: int = 0, meltr_cfg: dict | None = None,
                     loss_set: str = "univl8") -> dict:
    dev = resolve_device(device)
    meltr_cfg = dict(meltr_cfg or {})
    steps = max(k, math.ceil(max(steps, 20) / k) * k)  # at least 20 timed steps, a multiple of k
    warmup = warmup if warmup is not None else max(2 * k, 6)
    warmup = math.ceil(warmup / k) * k
    batches = synthetic_batches(max(12, 2 * k), batch_size, frames, feature_dim, max_words, seed, dev)
    configs = {"finetune": ("finetune", meltr_cfg), "multitask": ("multitask", meltr_cfg)}
    for name, est, mode in VARIANTS:
        configs[name] = ("meltr", {**meltr_cfg, "estimator": est, "meta_batches": mode})
    # Timing: every method warms up, then they take turns, one window (a multiple of k) each per round, so
    # slow drifts of the machine (clocks, caches, other load) fall on all methods alike.
    runs = {name: MethodRun(method, batches, model, k, dev, seed, cfg, loss_set) for name, (method, cfg) in configs.items()}
    for run in runs.values():
        run.run(warmup, record=False)
    for _ in range(steps // k):
        for run in runs.values():
            run.run(k)
    timing = {name: run.summary(batch_size) for name, run in runs.items()}
    del runs
    for name, (method, cfg) in configs.items():  # memory: one method at a time, nothing else resident
        timing[name]["peak_mem_mb"] = peak_memory_mb(method, batches, model, k, dev, seed, cfg, loss_set)
    accuracy = estimator_accuracy(batches, model, seed, dev, meltr_cfg, loss_set)
    ft, mt = timing["finetune"], timing["multitask"]
    estimators = {}
    for name, est, mode in VARIANTS:
        r = timing[name]
        estimators[name] = {
            **r, **accuracy[name], "estimator": est, "meta_batches": mode,
            "attention_kernel": "math (meta step)" if est in NEEDS_MATH_SDPA else "default",
            "ratio_vs_multitask": r["samples_per_s"] / mt["samples_per_s"],
            "ratio_vs_finetune": r["samples_per_s"] / ft["samples_per_s"],
            "mem_ratio_vs_multitask": r["peak_mem_mb"] / mt["peak_mem_mb"] if mt["peak_mem_mb"] > 0 else None,
        }
    params = sum(p.numel() for p in _fresh_model(model, batches, seed, torch.device("cpu")).parameters())
    return {"model": model, "params_m": params / 1e6, "k": k, "batch_size": batch_size, "steps_timed": steps,
            "losses": list(task_losses("retrieval", loss_set)),
            "timing": f"interleaved: {steps // k} rounds of {k} steps per method after {warmup} warm-up steps",
            "warmup": warmup, "device": device_name(dev), "torch": torch.__version__,
            "memory": "torch.cuda.max_memory_allocated" if dev.type == "cuda"
            else "sampled peak RSS increase over 2k steps after a 2k-step warm-up, each method alone in a "
            "spawned process with MALLOC_MMAP_THRESHOLD_=65536",
            "finetune": ft, "multitask": mt, "estimators": estimators}


def format_table(result: dict) -> str:
    lines = [f"meltr-step bench: model {result['model']} ({result['params_m']:.2f}M params), k={result['k']}, "
             f"batch {result['batch_size']}, {result['steps_timed']} timed steps, {result['device']}",
             f"{'method':<34}{'step ms':>9}{'samples/s':>11}{'meta ms':>9}{'peak MB':>9}"
             f"{'vs multi':>9}{'vs ft':>7}{'mem/multi':>10}{'rel err':>10}{'cos':>8}"]
    for name in ("finetune", "multitask"):
        r = result[name]
        lines.append(f"{name:<34}{r['step_ms']:>9.1f}{r['samples_per_s']:>11.1f}{'':>9}{r['peak_mem_mb']:>9.0f}")
    for est, r in result["estimators"].items():
        mem = f"{r['mem_ratio_vs_multitask']:.2f}" if r["mem_ratio_vs_multitask"] is not None else "n/a"
        lines.append(f"{'meltr/' + est:<34}{r['step_ms']:>9.1f}{r['samples_per_s']:>11.1f}{r['meta_step_ms']:>9.1f}"
                     f"{r['peak_mem_mb']:>9.0f}{r['ratio_vs_multitask']:>9.2f}{r['ratio_vs_finetune']:>7.2f}"
                     f"{mem:>10}{r['rel_err_vs_double_backward']:>10.1e}{r['cosine_vs_double_backward']:>8.4f}")
    return "\n".join(lines)
