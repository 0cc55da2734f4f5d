"""Two cheap learned loss weightings, the neighbours a reviewer knows MELTR by.

    uncertainty   Kendall, Gal and Cipolla (CVPR 2018): a learned log-variance s_m per loss,
                  total = sum_m exp(-s_m) L_m + s_m (the form most reimplementations use, e.g. LibMTL). No
                  extra pass: s takes its own Adam step on the gradient of that total at the step's loss
                  values (exp(-s_m) L_m ... -> 1 - exp(-s_m) L_m), beside the backbone's step.
    famo          FAMO, Liu et al. (NeurIPS 2023), as its official code (Cranial-XIX/FAMO) does it: weights
                  z = softmax(xi), the step follows sum_m z_m log L_m / c with c = sum_m z_m / L_m (so every
                  loss's log decreases at a rate set by z); after the backbone's step one extra forward on the
                  same batch gives L(W_{t+1}), and xi takes an Adam step (with weight decay gamma) along
                  J_softmax^T [log L(W_t) - log L(W_{t+1})].

Both keep their own parameters out of the backbone's optimiser (the trainer back-propagates into the model's
parameters only) and update them in the combiner hooks, as MELTR does; `meta_opt` is the combiner's own
optimiser, saved with its state for a resumed run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import seeded
from ..train.parallel import all_reduce_mean
from .base import LossCombiner

UNCERTAINTY_LR = 1e-2   # Adam step of the log-variances (the papers train them with the model's optimiser)
FAMO_LR = 0.025         # the official code's w_lr
FAMO_GAMMA = 0.01       # the official code's weight decay of the logits
FAMO_EPS = 1e-8         # the official code's offset inside the logarithms


class _OwnOptimiser(LossCombiner):
    """A combiner whose parameters move by their own optimiser, whose state a checkpoint keeps."""

    meta_opt: torch.optim.Optimizer

    def get_extra_state(self) -> dict:
        return {"meta_opt": self.meta_opt.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.meta_opt.load_state_dict(state["meta_opt"])

    def _step(self, param: nn.Parameter, grad: torch.Tensor) -> None:
        (grad,) = all_reduce_mean([grad.detach()])  # one value on every rank, as MELTR's update
        param.grad = grad.clone()
        self.meta_opt.step()
        self.meta_opt.zero_grad(set_to_none=True)


class UncertaintyWeighting(_OwnOptimiser):
    name = "uncertainty"

    def __init__(self, loss_names: list[str], primary: str, lr: float = UNCERTAINTY_LR):
        super().__init__(loss_names, primary)
        self.log_var = nn.Parameter(torch.zeros(len(self.loss_names)))
        self.meta_opt = torch.optim.Adam([self.log_var], lr=lr)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return (torch.exp(-self.log_var) * losses + self.log_var).sum()

    def pre_update(self, step, batch, model, losses, seed) -> dict | None:
        x = losses.detach()
        if not torch.isfinite(x).all():
            return None
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self(x), self.log_var)
        self._step(self.log_var, grad)
        return None


class FAMO(_OwnOptimiser):
    name = "famo"

    def __init__(self, loss_names: list[str], primary: str, lr: float = FAMO_LR, gamma: float = FAMO_GAMMA):
        super().__init__(loss_names, primary)
        self.logits = nn.Parameter(torch.zeros(len(self.loss_names)))
        self.meta_opt = torch.optim.Adam([self.logits], lr=lr, weight_decay=gamma)
        self._before: tuple[torch.Tensor, int] | None = None  # the step's losses and forward seed

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        z = F.softmax(self.logits, -1)
        d = losses + FAMO_EPS  # the official min_losses are zeros: every loss here is >= 0
        c = (z / d).sum().detach()
        return (d.log() * z / c).sum()

    def pre_update(self, step, batch, model, losses, seed) -> dict | None:
        self._before = (losses.detach(), seed)
        return None

    def meta_step(self, step, batch, model) -> dict | None:
        """The extra forward on the step's batch (same dropout masks) after the backbone's step, then the
        logits' update."""
        if self._before is None:
            return None
        before, seed = self._before
        self._before = None
        with torch.no_grad(), seeded(seed):
            out = model(batch, self.loss_names)
        after = torch.stack([out[n] for n in self.loss_names]).detach().float()
        delta = (before.float() + FAMO_EPS).log() - (after + FAMO_EPS).log()
        if not torch.isfinite(delta).all():  # a non-finite loss: the trainer's own guard reports it
            return None
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(F.softmax(self.logits, -1), self.logits, grad_outputs=delta.to(self.logits))
        self._step(self.logits, grad)
        return None
