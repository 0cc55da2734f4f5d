"""One small interface for every way of combining the task losses.

The trainer computes the losses a combiner asks for (`loss_names`, primary first), calls the combiner on
their vector to get the scalar to back-propagate, calls `pre_update` between the backward and the
backbone's optimiser step and `meta_step` after it; both do nothing unless the method is bi-level. The
trainer never branches on a name.
"""
from __future__ import annotations

import torch
from torch import nn


class LossCombiner(nn.Module):
    name = "base"

    def __init__(self, loss_names: list[str], primary: str):
        super().__init__()
        if primary not in loss_names:
            raise ValueError(f"primary loss {primary!r} is not among {loss_names}")
        # Primary first: MELTR's loss-type embeddings and the logs rely on a fixed order.
        self.loss_names = tuple([primary] + [n for n in loss_names if n != primary])
        self.primary = primary

    def forward(self, losses: torch.Tensor) -> torch.Tensor:  # (M,) -> scalar
        raise NotImplementedError

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """Effective per-loss weights dL_total/dL_m at these loss values (for logging)."""
        x = losses.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (w,) = torch.autograd.grad(self(x), x)
        return w

    def keeps_graph(self, step: int) -> bool:
        """Whether `pre_update` at this step needs the step's autograd graph after the backward."""
        return False

    def pre_update(self, step: int, batch: dict, model: nn.Module, losses: torch.Tensor, seed: int) -> dict | None:
        """Called after the backward, before the backbone's optimiser step, with the step's loss vector
        (graph alive if `keeps_graph`) and the seed its forward ran under. Returns stats when it did work."""
        return None

    def meta_step(self, step: int, batch: dict, model: nn.Module) -> dict | None:
        """Called after every backbone step with that step's batch. Returns stats when it did work."""
        return None


class Finetune(LossCombiner):
    """Standard fine-tuning: the primary loss only (the auxiliary losses are not even computed)."""

    name = "finetune"

    def __init__(self, loss_names: list[str], primary: str):
        super().__init__([primary], primary)

    def forward(self, losses):
        return losses[0]


class Multitask(LossCombiner):
    """Multi-task fine-tuning: the fixed, equal-weight sum of the primary and all auxiliary losses."""

    name = "multitask"

    def forward(self, losses):
        return losses.sum()
