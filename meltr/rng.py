"""Seeded random state for a block of code, leaving the global generators as they were."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block with every torch generator seeded by `seed` (dropout masks become a function of
    the seed, so a forward can be replayed exactly), then restore the previous generator states."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
