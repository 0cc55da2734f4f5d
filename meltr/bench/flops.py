"""FLOPs of a training step, and the peak a device is held to for MFU.

MFU follows the field's convention (PaLM, torchtitan, nanoGPT): achieved FLOP/s over the device's datasheet
dense bf16 peak, without sparsity. `DATASHEET_BF16_TFLOPS` holds those peaks by device name; an unknown device
(any CPU) falls back to a large matmul measured in the same run, labelled as such. The measured matmul is
kept beside the datasheet figure either way (`mfu_vs_matmul`).
"""
from __future__ import annotations

import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..train.device import sync

# Dense bf16 tensor-core peaks, TFLOP/s, from NVIDIA's product datasheets (their "with sparsity" figures
# halved): H100 SXM5 and H200 SXM 1,979 sparse; H100 NVL 1,671; H100 PCIe 1,513; A100 (SXM4 and PCIe) 624;
# L40S 733; L4 242; A10 250. Matched against torch.cuda.get_device_name, first match wins.
DATASHEET_BF16_TFLOPS = (
    (("H200",), 989.0, "NVIDIA H200 datasheet (SXM)"),
    (("H100", "NVL"), 835.5, "NVIDIA H100 NVL datasheet"),
    (("H100", "PCIe"), 756.5, "NVIDIA H100 PCIe datasheet"),
    (("H100",), 989.0, "NVIDIA H100 SXM5 datasheet"),
    (("A100",), 312.0, "NVIDIA A100 datasheet"),
    (("L40S",), 362.0, "NVIDIA L40S datasheet"),
    (("L4",), 121.0, "NVIDIA L4 datasheet"),
    (("A10",), 125.0, "NVIDIA A10 datasheet"),
)


def datasheet_peak(device_name: str) -> tuple[float, str] | None:
    """(FLOP/s, source) of the device's dense bf16 peak, or None for a device not in the table."""
    for words, tflops, source in DATASHEET_BF16_TFLOPS:
        if all(w in device_name for w in words):
            return tflops * 1e12, source
    return None


def measure_matmul_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of a large square matmul: the best this device does on dense math in this precision."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10 if device.type == "cuda" else 4
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


class OpCount(TorchDispatchMode):
    """The aten ops a step runs and their FLOPs by torch.utils.flop_counter's per-op formulas, without
    FlopCounterMode's module tracker, whose backward hooks refuse the meta step's autograd.grad on leaves."""

    def __init__(self):
        super().__init__()
        self.flops, self.ops = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.add(func._overloadpacket.__name__)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


# Dispatcher names of the fused attention kernels (the CPU flash kernel is "..._flash_attention_for_cpu").
SDPA_OPS = {"_scaled_dot_product_flash_attention": "flash", "_scaled_dot_product_efficient_attention": "efficient",
            "_scaled_dot_product_cudnn_attention": "cudnn", "_flash_attention": "flash",
            "_efficient_attention": "efficient"}


def attention_kernels(ops: set[str]) -> list[str]:
    """The fused SDPA kernels among the dispatched ops; "math" when none is (the math path decomposes into
    matmuls before it reaches the dispatcher)."""
    return sorted({kind for op, kind in SDPA_OPS.items() if any(n.startswith(op) for n in ops)}) or ["math"]
