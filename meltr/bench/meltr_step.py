"""`meltr bench meltr-step`: what one MELTR training step costs, against finetune and multitask, per estimator.

Every method trains a fresh copy of the same model (same seed) on the same pre-built batches: finetune,
multitask, and meltr with each hypergradient estimator on the official replayed meta batches plus the two
that reuse the training step's own batch (`@current`). They are timed side by side by the one runner
(bench/runner.py: warm-up excluded, interleaved windows of k steps, per-round ratios with their spread).
Each estimator's hypergradient is also compared with `double_backward` (the official computation) on the
same state and the same meta batches.
"""
from __future__ import annotations

import math

import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..combiners import build_combiner
from ..combiners.meltr import trainable
from ..meta.hypergradient import ESTIMATORS, NEEDS_MATH_SDPA, grads_or_zeros, hypergradient
from ..models.build import build_model, count_parameters
from ..models.losses import PRIMARY, task_losses
from ..models.tokenizer import load_tokenizer
from ..train.device import device_name, resolve_device
from ..train.memory import allocated_mb
from .runner import PROTOCOL, Contender, interleave, ratio, synthetic_batches

# (name, estimator, meta batches): the official sampling for every estimator, plus ours that reuse the
# training step's own forward.
VARIANTS = [(est, est, "replay") for est in ESTIMATORS] + [
    ("jvp@current", "jvp", "current"), ("finite_difference@current", "finite_difference", "current")]


def _fresh_model(model_name: str, batches: list[dict], seed: int, device: torch.device):
    b = batches[0]
    return build_model(model_name, b["video"].shape[-1], load_tokenizer().vocab_size, b["text_ids"].shape[1],
                       b["video"].shape[1], seed).to(device)


def estimator_accuracy(batches: list[dict], model_name: str, seed: int, device: torch.device,
                       meltr_cfg: dict, loss_set: str = "univl8") -> dict:
    """Each variant's hypergradient against double_backward on the same state and the same meta batches
    (replay variants: B_t, B_v = two different batches; @current: both the step's own batch)."""
    model = _fresh_model(model_name, batches, seed, device).eval()
    combiner = build_combiner("meltr", list(task_losses("retrieval", loss_set)), PRIMARY["retrieval"],
                              {**meltr_cfg, "seed": seed})
    combiner.to(device)
    names, params = trainable(model)
    opts = combiner.estimator_options()

    def task_losses_on(batch):
        return combiner.task_loss_fn(model, names, batch, seed)

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
    rounds = max(3, math.ceil(max(steps, 20) / k))  # at least 20 timed steps and 3 rounds, windows of k
    warmup = warmup if warmup is not None else max(2 * k, 6)
    warmup = math.ceil(warmup / k) * k
    batches = synthetic_batches(max(12, 2 * k), batch_size, frames, max_words, feature_dim, seed, dev)
    configs = {"finetune": ("finetune", meltr_cfg), "multitask": ("multitask", meltr_cfg)}
    for name, est, mode in VARIANTS:
        configs[name] = ("meltr", {**meltr_cfg, "estimator": est, "meta_batches": mode})
    losses = list(task_losses("retrieval", loss_set))
    contenders, memory = {}, {}
    for name, (method, cfg) in configs.items():
        base_mb = allocated_mb(dev)
        combiner = build_combiner(method, losses, PRIMARY["retrieval"], {**cfg, "k": k, "seed": seed}).to(dev)
        c = Contender(name, _fresh_model(model, batches, seed, dev).train(), combiner, batches, dev, seed=seed)
        c.run(warmup)
        memory[name] = c.peak_memory_mb(2 * k, base_mb)
        contenders[name] = c
    interleave(contenders, [k], rounds, warmup=0)
    timing = {}
    for name, c in contenders.items():
        timing[name] = {**c.summary(k if c.is_meltr else None), "peak_mem_mb": memory[name]}
    accuracy = estimator_accuracy(batches, model, seed, dev, meltr_cfg, loss_set)
    ft, mt = timing["finetune"], timing["multitask"]
    estimators = {}
    for name, est, mode in VARIANTS:
        r = timing[name]
        rates = contenders[name].round_rates(k)
        vs_mt, vs_ft = ratio(rates, contenders["multitask"].round_rates(None)), \
            ratio(rates, contenders["finetune"].round_rates(None))
        estimators[name] = {
            **r, **accuracy[name], "estimator": est, "meta_batches": mode,
            "attention_kernel": "math (meta step)" if est in NEEDS_MATH_SDPA else "default",
            "ratio_vs_multitask": vs_mt["median"], "ratio_vs_multitask_iqr": vs_mt["iqr"],
            "ratio_vs_multitask_usable": vs_mt["usable"],
            "ratio_vs_finetune": vs_ft["median"], "ratio_vs_finetune_iqr": vs_ft["iqr"],
            "ratio_vs_finetune_usable": vs_ft["usable"],
            "mem_ratio_vs_multitask": r["peak_mem_mb"] / mt["peak_mem_mb"] if mt["peak_mem_mb"] > 0 else None,
        }
    params = count_parameters(contenders["finetune"].model)
    return {"model": model, "params_m": params / 1e6, "k": k, "batch_size": batch_size,
            "steps_timed": rounds * k, "rounds": rounds, "losses": losses, "interleaved": True,
            "timing": f"{PROTOCOL}; {rounds} rounds of {k} steps per method after {warmup} warm-up steps",
            "warmup": warmup, "device": device_name(dev), "torch": torch.__version__,
            "memory": "train/memory.py: everything the method holds at its peak over 2k steps after warm-up",
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
