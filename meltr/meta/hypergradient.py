"""Hypergradients of the outer (validation) loss with respect to the loss combiner's parameters.

Notation (meltr-official.md §2): W backbone parameters, phi combiner parameters, L(W) the vector of M task
losses on the training batch, f_phi the combiner, L_train = f_phi(L(W)), L_val the outer loss,
g_v = dL_val/dW. The official MELTR update assigns

    phi.grad = -d/dphi < dL_train/dW , g_v >          (implicit function theorem, inverse Hessian ~ I)

Since dL_train/dW = sum_m w_m(phi) dL_m/dW with w = df_phi/dL, that equals
-d/dphi sum_m w_m(phi) s_m with s = J_L(W) g_v, the directional derivative of the loss vector along g_v.
The estimators differ only in how they get there:

    double_backward    the official computation: create_graph backward, then a double backward (~8F)
    neumann            AuxiLearn: K Neumann terms p = sum_i (I - alpha H)^i g_v replace g_v; K=0 is official.
                       As K grows, alpha * result -> the exact implicit hypergradient.
    jvp                exact: s by one forward-mode JVP of L along g_v, then a tiny backward through f only
    finite_difference  s ~ (L(W + eps v) - L(W - eps v)) / 2 eps with eps = fd_eps / |v|: first-order passes
                       only, so fused attention, DDP and FSDP keep working. Given L(W) and v from the
                       training step itself, one-sided: a single extra forward (~3F per meta step).
                       With `inplace=True` it perturbs the parameters in place and takes g_v from an
                       ordinary `.backward()`, so the module may be wrapped (DDP, FSDP2 with DTensor shards):
                       no functional_call, no autograd.grad with respect to the parameters.

All return one tensor per parameter of `combiner.parameters()`, with the official sign.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..train.parallel import all_reduce_mean

ESTIMATORS = ("double_backward", "neumann", "jvp", "finite_difference")
# Estimators that differentiate twice or in forward mode: fused SDPA kernels support neither.
NEEDS_MATH_SDPA = {"double_backward", "neumann", "jvp"}
# The estimators' settings, defaults of `hypergradient` and of MeltrConfig alike (config.py imports them from
# here: it imports this module, so this one cannot import config).
NEUMANN_TERMS = 3       # Neumann series terms K (neumann)
NEUMANN_ALPHA = 1e-2    # Neumann step alpha (neumann)
FD_EPS = 3e-4           # finite-difference radius, relative to |v|: one-sided FD error ~1e-3 vs double_backward

LossVector = Callable[[Sequence[torch.Tensor]], torch.Tensor]
Scalar = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def hypergradient(combiner: nn.Module, task_losses: LossVector, val_loss: Scalar,
                  params: Sequence[torch.Tensor], method: str = "double_backward", *,
                  neumann_terms: int = NEUMANN_TERMS, neumann_alpha: float = NEUMANN_ALPHA, fd_eps: float = FD_EPS,
                  fd_midpoint: bool = True, v: Sequence[torch.Tensor] | None = None,
                  losses: torch.Tensor | None = None, inplace: bool = False) -> tuple[torch.Tensor, ...]:
    """One tensor per parameter of `combiner.parameters()`, with the official sign.

    Reuse (first-order estimators only): `v` is dL_val/dW already computed (then `val_loss` is not
    called); `losses` is L(W) already computed on the training batch, which makes `finite_difference`
    one-sided: one extra forward, s ~ (L(W + eps v) - L(W)) / eps.

    `inplace` (finite_difference only): `task_losses` and `val_loss` are called with `params` themselves,
    perturbed in place and restored afterwards (to within float rounding), so they may ignore their argument
    and call a wrapped module; v comes from `val_loss(params).backward()` (under DDP or FSDP2 the
    gradient of the global batch, sharded like the parameters). The parameters' `.grad` is left as None.
    Under FSDP2 the root module must reshard after forward too (`fully_shard(root, reshard_after_forward=True)`;
    FSDP2 keeps the root's gathered parameters by default), or a forward would not see the perturbed shards.
    """
    if method not in ESTIMATORS:
        raise ValueError(f"hypergradient method {method!r}: expected one of {ESTIMATORS}")
    params = list(params)
    phi = list(combiner.parameters())
    if inplace:
        if method != "finite_difference":
            raise ValueError(f"hypergradient: inplace=True needs method 'finite_difference', got {method!r}")
        return _finite_difference_inplace(combiner, task_losses, val_loss, params, phi, fd_eps, v, losses)
    if method in ("double_backward", "neumann"):
        return _reverse_over_reverse(combiner, task_losses, val_loss, params, phi,
                                     neumann_terms if method == "neumann" else 0, neumann_alpha)
    v = list(v) if v is not None else grads_or_zeros(val_loss(params), params)
    if method == "jvp":
        primals = tuple(p.detach() for p in params)
        losses, s = torch.func.jvp(lambda *ps: task_losses(list(ps)), primals, tuple(v))
    elif losses is not None:
        losses, s = _one_sided_difference(task_losses, params, v, fd_eps, losses.detach())
    else:
        losses, s = _finite_difference(task_losses, params, v, fd_eps, fd_midpoint)
    return _contract(combiner, losses.detach(), s.detach(), phi)


def grads_or_zeros(out: torch.Tensor, wrt: Sequence[torch.Tensor], **kw) -> list[torch.Tensor]:
    """autograd.grad with zeros (not None) for inputs the output does not depend on."""
    got = torch.autograd.grad(out, wrt, allow_unused=True, **kw)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(got, wrt)]


def _reverse_over_reverse(combiner, task_losses, val_loss, params, phi, terms: int, alpha: float):
    l_train = combiner(task_losses(params))
    g_train = torch.autograd.grad(l_train, params, create_graph=True, allow_unused=True)
    v = grads_or_zeros(val_loss(params), params)
    # Only the entries of dL_train/dW that carry a graph can be differentiated again.
    live = [i for i, g in enumerate(g_train) if g is not None and g.requires_grad]
    g_live = [g_train[i] for i in live]
    p = list(v)
    for _ in range(terms):  # AuxiLearn's approxInverseHVP: v <- v - alpha H v ; p <- p + v
        hv = grads_or_zeros(g_live, [params[i] for i in live], grad_outputs=[v[i] for i in live], retain_graph=True)
        for j, i in enumerate(live):
            v[i] = v[i] - alpha * hv[j]
            p[i] = p[i] + v[i]
    hg = grads_or_zeros(g_live, phi, grad_outputs=[p[i] for i in live])
    return tuple(-h for h in hg)


def _finite_difference(task_losses, params, v, eps_scale: float, midpoint: bool):
    eps = _radius(v, eps_scale)
    with torch.no_grad():
        plus = task_losses([p + eps * d for p, d in zip(params, v)])
        minus = task_losses([p - eps * d for p, d in zip(params, v)])
        losses = (plus + minus) / 2 if midpoint else task_losses([p.detach() for p in params])
    return losses, (plus - minus) / (2 * eps)


def _one_sided_difference(task_losses, params, v, eps_scale: float, losses: torch.Tensor):
    eps = _radius(v, eps_scale)
    with torch.no_grad():
        plus = task_losses([p + eps * d for p, d in zip(params, v)])
    return losses, (plus - losses) / eps


def _finite_difference_inplace(combiner, task_losses, val_loss, params, phi, eps_scale: float, v, losses):
    if v is None:
        for p in params:
            p.grad = None
        val_loss(params).backward()
        v = [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in params]
        for p in params:
            p.grad = None
    v = list(v)
    with torch.no_grad():
        if losses is None:
            losses = task_losses(params)
        eps = _radius(v, eps_scale)
        for p, d in zip(params, v):
            p.add_(d, alpha=eps)
        try:
            plus = task_losses(params)
        finally:
            for p, d in zip(params, v):
                p.sub_(d, alpha=eps)
    # Several ranks: contract at the global batch's loss vector and difference (the means over ranks, exact
    # for per-example losses), so every rank gets the single-process value of the whole batch.
    losses, plus = all_reduce_mean([losses.detach(), plus.detach()])
    return _contract(combiner, losses, (plus - losses) / eps, phi)


def _radius(v: Sequence[torch.Tensor], eps_scale: float) -> float:
    """The step along v: eps_scale / |v|, so the perturbation's norm is eps_scale whatever v's scale."""
    return eps_scale / max(float(_global_norm(v)), 1e-12)


def _global_norm(v: Sequence[torch.Tensor]) -> torch.Tensor:
    """|v| over all ranks' shards: DTensor (FSDP2) entries hold one shard of each parameter per rank."""
    local = [x.to_local() if hasattr(x, "to_local") else x for x in v]  # DTensor: this rank's shard
    sq = sum((x.detach().double() ** 2).sum() for x in local)
    if any(hasattr(x, "to_local") for x in v):
        import torch.distributed as dist

        dist.all_reduce(sq)  # stays on the shards' device, as NCCL needs
    return sq.sqrt()


def _contract(combiner, losses: torch.Tensor, s: torch.Tensor, phi):
    """-d/dphi sum_m w_m(phi) s_m with w = df_phi/dL at the (fixed) loss vector."""
    losses = losses.clone().requires_grad_(True)
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):  # MELTR's own attention is differentiated twice
        (w,) = torch.autograd.grad(combiner(losses), losses, create_graph=True)
        hg = grads_or_zeros((w * s).sum(), phi)
    return tuple(-h for h in hg)
