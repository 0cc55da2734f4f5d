"""MELTR as a loss combiner: the Meta Loss Transformer plus its bi-level meta step.

Port of the official training loop (meltr-official.md §2), ours where marked:
- every backbone step's batch goes into a replay buffer of the last `buffer_size` batches (FIFO, as UniVL);
- when step % k == 0, a "train" batch B_t and a "validation" batch B_v are drawn independently from the
  buffer (there is no held-out split in the official code either);
- outer loss L_val = L_primary(W; B_v) + gamma * |sum L(W; B_t) - MELTR(L(W; B_t))|;
- phi.grad = the hypergradient (estimator chosen by `estimator`), clipped to `clip`, Adam step.
- `reg_direct` (ours, off by default to match the official code): also add the regulariser's direct
  gradient with respect to phi, which the official code drops (AuxiLearn's "zero in our settings").
- A non-finite hypergradient skips that meta update (logged by the trainer) instead of poisoning phi.
"""
from __future__ import annotations

import contextlib
import random
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..meta.hypergradient import ESTIMATORS, NEEDS_MATH_SDPA, hypergradient
from ..meta.meltr_net import NET_PRESETS, MetaLossTransformer
from .base import LossCombiner


@dataclass
class MeltrConfig:
    k: int = 3                      # meta step every k backbone steps
    buffer_size: int = 10           # replay buffer of recent training batches
    lr: float = 1e-3                # meta optimiser (Adam), UniVL's lr_vnet
    weight_decay: float = 3e-5
    clip: float = 50.0              # max norm of phi's gradient
    gamma: float = 0.0              # regulariser weight (UniVL: off by default; Violet/All-in-one: 0.1)
    reg_direct: bool = False        # add the regulariser's direct d/dphi term (the official code drops it)
    estimator: str = "double_backward"
    net: str = "univl"              # size preset of the Meta Loss Transformer
    dropout: float = 0.0            # UniVL runs MELTR in eval mode
    neumann_terms: int = 3
    neumann_alpha: float = 1e-2
    fd_eps: float = 1e-2
    seed: int = 0

    def __post_init__(self):
        if self.k < 1 or self.buffer_size < 1:
            raise ValueError(f"meltr.k and meltr.buffer_size must be >= 1, got {self.k}, {self.buffer_size}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"meltr.estimator {self.estimator!r}: expected one of {ESTIMATORS}")
        if self.net not in NET_PRESETS:
            raise ValueError(f"meltr.net {self.net!r}: expected one of {sorted(NET_PRESETS)}")


class MeltrCombiner(LossCombiner):
    name = "meltr"

    def __init__(self, loss_names: list[str], primary: str, cfg: MeltrConfig | None = None):
        super().__init__(loss_names, primary)
        self.cfg = cfg = cfg or MeltrConfig()
        p = NET_PRESETS[cfg.net]
        self.net = MetaLossTransformer(len(self.loss_names), p.f_dim, p.h1, p.h2, p.heads, cfg.dropout)
        self.meta_opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.buffer: deque[dict] = deque(maxlen=cfg.buffer_size)
        self.rng = random.Random(cfg.seed)

    def forward(self, losses):
        return self.net(losses)

    def meta_step(self, step: int, batch: dict, model: nn.Module) -> dict | None:
        self.buffer.append(batch)
        if step % self.cfg.k != 0:
            return None
        cfg = self.cfg
        batch_t, batch_v = self.rng.choice(self.buffer), self.rng.choice(self.buffer)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = [p for p in model.parameters() if p.requires_grad]
        # Every forward of one meta step sees the same dropout masks, so the estimators agree.
        seed_t, seed_v = self.rng.randrange(2**31), self.rng.randrange(2**31)

        def run(ps, batch, losses, seed):
            with _seeded(seed):
                return functional_call(model, dict(zip(names, ps)), (batch, losses))

        def task_losses(ps):
            out = run(ps, batch_t, self.loss_names, seed_t)
            return torch.stack([out[n] for n in self.loss_names])

        def val_loss(ps):
            loss = run(ps, batch_v, (self.primary,), seed_v)[self.primary]
            if cfg.gamma:
                vec = task_losses(ps)
                loss = loss + cfg.gamma * (vec.sum() - self.net(vec)).abs()
            return loss

        kernel = sdpa_kernel(SDPBackend.MATH) if cfg.estimator in NEEDS_MATH_SDPA else contextlib.nullcontext()
        with kernel:
            grads = hypergradient(self.net, task_losses, val_loss, params, cfg.estimator,
                                  neumann_terms=cfg.neumann_terms, neumann_alpha=cfg.neumann_alpha,
                                  fd_eps=cfg.fd_eps)
            if cfg.gamma and cfg.reg_direct:
                with torch.no_grad():
                    vec = task_losses(params)
                direct = torch.autograd.grad(cfg.gamma * (vec.sum() - self.net(vec)).abs(),
                                             list(self.net.parameters()), allow_unused=True)
                grads = tuple(g if d is None else g + d for g, d in zip(grads, direct))
        if not all(torch.isfinite(g).all() for g in grads):
            return {"meta_skipped": True}
        for p, g in zip(self.net.parameters(), grads):
            p.grad = g.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip)
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)
        return {"meta_skipped": False, "meta_grad_norm": float(norm)}


@contextlib.contextmanager
def _seeded(seed: int):
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # seeds the CPU and every CUDA generator
        yield
