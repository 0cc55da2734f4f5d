"""`meltr bench cost`: what MELTR costs on one task, measured as the report states it.

The pipeline's training jobs run one after another, each with the machine to itself, but a shared
workstation drifts between them: dividing their samples/s gave ratios that no rerun reproduced. This job
builds each method on the task's own model and its own training batches (train/loop.TaskData, exactly as
`meltr train` does) and times them side by side through the one runner (bench/runner.py): warm-up excluded,
interleaved windows of k steps, a ratio per round with its median and IQR, and `usable: false` where the
spread makes a ratio say nothing. The report's cost ratios come from here; the training jobs keep their own
throughput records.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from ..config import BASELINES, MeltrConfig, TrainConfig
from ..train.device import device_name, resolve_device, resolve_precision
from ..train.loop import load_task_data
from ..train.memory import allocated_mb
from .runner import PROTOCOL, Contender, interleave, ratio



def task_cost(train_manifest: str, features_dir: str, cfg: TrainConfig, methods: list[str], rounds: int,
              warmup: int | None = None, progress: bool = True) -> dict:
    """Every method of `methods` on the task's model and batches, interleaved; MELTR against each baseline."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    data = load_task_data(train_manifest, features_dir, cfg)
    meltr = MeltrConfig(**cfg.meltr)
    k = meltr.k
    warmup = warmup if warmup is not None else max(2 * k, 6)
    batches = [data.batch(i, device) for i in range(max(12, 2 * k))]
    contenders, memory = {}, {}
    for method in tqdm(methods, desc=f"cost {cfg.dataset}/{cfg.task}: warm-up", unit="method", disable=not progress):
        base_mb = allocated_mb(device)
        c = Contender(method, data.new_model(device), data.new_combiner(method, cfg.meltr, device), batches, device,
                      cfg.precision, lr=cfg.lr, seed=cfg.seed, grad_clip=cfg.grad_clip)
        c.run(warmup)
        memory[method] = c.peak_memory_mb(2 * k, base_mb)
        contenders[method] = c
    with tqdm(total=rounds, desc=f"cost {cfg.dataset}/{cfg.task}: rounds", unit="round",
              disable=not progress) as bar:
        interleave(contenders, [k], rounds, warmup=0, progress=bar)
    out = {"dataset": cfg.dataset, "task": cfg.task, "model": cfg.model, "family": data.family, "k": k,
           "batch_size": cfg.batch_size, "rounds": rounds, "warmup": warmup, "interleaved": True,
           "timing": PROTOCOL, "device": device_name(device), "precision": resolve_precision(cfg.precision, device),
           "memory": "train/memory.py: everything the method holds at its peak over 2k steps after warm-up",
           "estimator": meltr.estimator, "meta_batches": meltr.meta_batches,
           "methods": {}}
    for method, c in contenders.items():
        out["methods"][method] = {**c.summary(k if c.is_meltr else None), "peak_mem_mb": memory[method]}
    if "meltr" in contenders:
        rates = contenders["meltr"].round_rates(k)
        for b in BASELINES:
            if b in contenders:
                r = ratio(rates, contenders[b].round_rates(None))
                out[f"meltr_vs_{b}"] = r["median"]
                out[f"meltr_vs_{b}_iqr"] = r["iqr"]
                out[f"meltr_vs_{b}_usable"] = r["usable"]
                out[f"mem_meltr_vs_{b}"] = memory["meltr"] / memory[b] if memory[b] > 0 else None
    return out
