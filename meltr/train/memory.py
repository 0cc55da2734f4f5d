"""Peak memory of a method: the one definition in the package.

peak_mem_mb = what the method holds at its peak over the measured steps: its weights, gradients, optimiser
state and MELTR, plus the steps' transient buffers (activations, the meta step's copies).
- GPU: torch.cuda.max_memory_allocated over the steps (reset at their start), less what was allocated before
  the method's model was built (other methods resident beside it are not counted).
- CPU, which has no allocator statistics: the bytes of the tensors that live across steps (counted from the
  modules and optimisers, shared storage once) plus the sampled peak rise of the resident set during the
  steps. `strict` (the benchmarks) also makes glibc serve every block of 64 KiB or more from mmap, so that
  freed memory leaves the resident set and reused memory does not hide a peak; it slows allocation, so
  training jobs, which time the same steps, leave it off and may under-count their transients.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from typing import Callable, Iterable

import psutil
import torch
from torch import nn

# glibc: blocks of at least M_MMAP_THRESHOLD come from mmap and go back to the OS on free; the heap's top is
# given back above M_TRIM_THRESHOLD. Setting either turns glibc's adaptive thresholds off, so set both.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _mallopt(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(option, value)


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every `interval_s`."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def resident_state_mb(modules: Iterable[nn.Module], optimisers: Iterable[torch.optim.Optimizer | None]) -> float:
    """Bytes that live across steps: parameters of the modules and the optimisers' state (shared storage once)."""
    tensors = [p for m in modules for p in m.parameters()]
    for opt in optimisers:
        if opt is not None:
            tensors += [t for state in opt.state.values() for t in state.values() if torch.is_tensor(t)]
    tensors = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]  # FSDP2: this rank's shards
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values()) / 2**20


def allocated_mb(device: torch.device) -> float:
    """What is allocated on the device now (0 on a CPU): the base a method's peak is measured above."""
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


class PeakMemory:
    """`with PeakMemory(device, state, base_mb): <steps>` then `.mb` (see the module docstring).
    `state` returns (modules, optimisers) of the method, read after the steps (optimiser state exists then)."""

    def __init__(self, device: torch.device, state: Callable[[], tuple[list, list]], base_mb: float = 0.0,
                 strict: bool = True):
        self.device, self.state, self.base_mb, self.strict = device, state, base_mb, strict
        self.mb = float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        gc.collect()
        if self.strict:
            _malloc_trim()  # free heap memory would be reused unseen by the steps: hand it back first
            _mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        self._rss = PeakRSS(0.001 if self.strict else 0.01).__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base_mb
            return False
        self._rss.__exit__(*exc)
        if self.strict:  # back to heap allocation that keeps freed memory for reuse, as glibc's adaptive mode
            _mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
            _mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
        modules, optimisers = self.state()
        self.mb = resident_state_mb(modules, optimisers) + self._rss.mb
        return False
