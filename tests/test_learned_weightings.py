"""Uncertainty weighting and FAMO (combiners/learned.py): their formulas, their updates, and a run of each."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from meltr.combiners import build_combiner
from meltr.combiners.learned import FAMO_EPS, FAMO_LR, UNCERTAINTY_LR


def test_uncertainty_weighting_is_kendall_and_moves_its_log_variances_toward_the_losses():
    c = build_combiner("uncertainty", ["a", "b", "c"], "a")
    losses = torch.tensor([2.0, 0.5, 1.0])
    assert float(c(losses)) == pytest.approx(float(losses.sum()))  # s = 0: the plain sum
    assert torch.allclose(c.weights(losses), torch.ones(3))
    c.pre_update(1, {}, None, losses, 0)
    # d/ds (e^-s L + s) = 1 - L at s = 0; Adam's first step moves each s by lr against its gradient's sign
    expected = -UNCERTAINTY_LR * torch.sign(1 - losses)
    assert torch.allclose(c.log_var.detach(), expected, atol=1e-6)
    for _ in range(2000):  # the optimum of e^-s L + s is s = log L
        c.pre_update(1, {}, None, losses, 0)
    assert torch.allclose(c.log_var.detach(), losses.log(), atol=0.05)
    assert torch.allclose(c.weights(losses), 1 / losses, rtol=0.06)


class Quadratic(torch.nn.Module):
    """Two losses of one parameter vector, the second ten times the first's scale."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))

    def forward(self, batch, names):
        return {"a": (self.w[0] - 3) ** 2 + 0.1, "b": 10 * (self.w[1] + 1) ** 2 + 1.0}


def test_famo_follows_the_official_update():
    model, c = Quadratic(), build_combiner("famo", ["a", "b"], "a")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out = model({}, c.loss_names)
    losses = torch.stack([out["a"], out["b"]])
    total = c(losses)
    # z = (1/2, 1/2): the step direction is sum_m z_m grad L_m / L_m, normalised by c = sum_m z_m / L_m
    d = losses.detach() + FAMO_EPS
    want = (0.5 * d.log() / (0.5 / d).sum()).sum()
    assert float(total) == pytest.approx(float(want))
    opt.zero_grad()
    total.backward()
    c.pre_update(1, {}, model, losses, 7)
    opt.step()
    after = torch.stack(list(model({}, c.loss_names).values())).detach()
    c.meta_step(1, {}, model)
    delta = d.log() - (after + FAMO_EPS).log()
    z = torch.tensor([0.5, 0.5])
    grad = (torch.diag(z) - torch.outer(z, z)) @ delta  # the softmax Jacobian (symmetric) times delta
    # Adam's first step from zero logits (where weight decay adds nothing): -lr * sign(grad)
    assert torch.allclose(c.logits.detach(), -FAMO_LR * torch.sign(grad), atol=1e-6)
    # the effective weights dTotal/dL_m = z_m / (c L_m) sum to one, whatever z
    assert math.isclose(float(c.weights(losses).sum()), 1.0, rel_tol=1e-5)
    # the loss whose logarithm fell less gains weight (FAMO balances the rates of improvement)
    rel = delta
    assert (F.softmax(c.logits, -1)[int(rel.argmin())] > 0.5).item()


@pytest.mark.parametrize("method", ["uncertainty", "famo"])
def test_a_training_run_moves_the_weights_it_logs(method, tmp_path, one_thread):
    """`meltr train --method uncertainty|famo` trains, and the effective loss weights it logs move (a killed
    and resumed famo run is bitwise an uninterrupted one: tests/test_resume.py)."""
    from conftest import make_tiny_msrvtt

    from meltr.cli import main

    root = make_tiny_msrvtt(tmp_path, n_train=8, n_test=4)
    assert main(["features", "--manifests", str(root / "prep/train.jsonl"), "--out", str(root / "feats"),
                 "--threads", "1"]) == 0
    assert main(["train", "--train-manifest", str(root / "prep/train.jsonl"), "--features", str(root / "feats"),
                 "--out", str(tmp_path / "run"), "--method", method, "--model", "micro", "--steps", "6",
                 "--batch-size", "4", "--timing-warmup", "1", "--threads", "1"]) == 0
    log = [json.loads(x) for x in (tmp_path / "run/train_log.jsonl").open()]
    assert len(log[0]["weights"]) == 8 and log[0]["weights"] != log[-1]["weights"]
    assert not any(e["meta"] for e in log)  # no meta step: they update in the combiner hooks
