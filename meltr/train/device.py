"""The device a job runs on: which one, how to wait for it, how to read its clocks and name it.

The one definition of device synchronisation (`sync`) in the package: clocks are read only after it, or
through CUDA events that need no synchronisation inside a timed window.
"""
from __future__ import annotations

import contextlib
import os
import time

import torch

from ..errors import MeltrError


def resolve_device(name: str, distributed: bool = False) -> torch.device:
    """auto: the GPU when there is one. Under torchrun (`distributed`) each process takes the GPU of its
    LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MeltrError(f"device {name!r}: expected auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MeltrError(f"device {name!r}: expected an available CUDA device; this torch "
                         f"({torch.__version__}) sees none")
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncClock:
    """Wall-clock timestamps, the device synchronised before each read (the trainer's default)."""

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self):
        sync(self.device)
        return time.perf_counter() * 1e3

    @staticmethod
    def ms(a, b) -> float:
        return b - a


class EventClock:
    """CUDA events recorded on the stream: no synchronisation inside the step, so the GPU keeps its queue
    full; read only after the caller has synchronised (StepResult.resolve)."""

    @staticmethod
    def mark():
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @staticmethod
    def ms(a, b) -> float:
        return a.elapsed_time(b)



def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"



def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 autocast on a GPU (as real fine-tuning runs), fp32 on a CPU."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """The one place mixed precision is applied: bf16 autocast around forward and backward, or nothing."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
