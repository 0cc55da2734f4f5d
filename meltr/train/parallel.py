"""Several processes: the one place that knows about torch.distributed.

Model code stays single-device; `wrap_ddp` is applied afterwards. MELTR's meta step differentiates with
torch.autograd.grad, which bypasses DDP's gradient reducer (pytorch#63740), so the combiner's gradient
is averaged across ranks explicitly (`all_reduce_mean`); the official code never does, and its MELTR
copies drift apart.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    if not is_distributed():
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # Not every loss uses every parameter (finetune computes align only).
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def wrap(model: nn.Module, device: torch.device, mode: str = "ddp") -> nn.Module:
    """Data parallelism for a torchrun launch (identity in one process): "ddp" replicates the model;
    "fsdp" shards it with FSDP2, one unit per transformer layer, for models that do not fit one device.
    Under FSDP2 MELTR's meta step must be `finite_difference` on replayed batches (the combiner checks):
    it perturbs the local shards in place and only needs first-order passes through the module."""
    if not is_distributed():
        return model
    if mode == "ddp":
        return wrap_ddp(model, device)
    if mode != "fsdp":
        raise ValueError(f"parallel mode {mode!r}: expected ddp or fsdp")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = getattr(model, "block_types", ())  # the model class names its transformer blocks
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    # The root reshards after forward too: the finite-difference meta step's no-grad forwards then
    # gather the perturbed shards afresh (see meta.hypergradient(inplace=True)).
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    return model


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over ranks of each tensor (identity in a single process)."""
    if not is_distributed():
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    out, i = [], 0
    for t in tensors:
        out.append(flat[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out
