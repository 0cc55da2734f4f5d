"""Building a model from a size preset: the one place that turns settings into a module (random init, seeded).

The preset's family decides the model: UniVL-style two-stream encoders (univl.py) or a VideoLLM (videollm.py).
Both take the same arguments and answer the trainer, the evaluation and the benchmarks through the same methods.
"""
from __future__ import annotations

import torch
from torch import nn

from .adapters import apply_adapters
from .presets import get_preset
from .univl import VideoLanguageModel
from .videollm import VideoLLM

MODELS = {"univl": VideoLanguageModel, "videollm": VideoLLM}


def max_positions(frames: int) -> int:
    """Video positions a model is built with: at least 32, so short clips share one shape."""
    return max(32, frames)


def bench_frames(name: str) -> int:
    """Visual rows per clip a preset's bench batches have (frames x visual tokens per frame)."""
    p = get_preset(name)
    return p.frames * getattr(p, "tokens_per_frame", 1)


def new_model(name: str, feature_dim: int, vocab_size: int, max_words: int, max_frames: int,
              num_answers: int = 1) -> nn.Module:
    preset = get_preset(name)
    return MODELS[preset.family](preset, feature_dim, vocab_size, max_words, max_positions(max_frames),
                                 num_answers=num_answers)


def build_model(preset_name: str, feature_dim: int, vocab_size: int, max_words: int, max_frames: int,
                seed: int, num_answers: int = 1, adapters: str = "none", lora_rank: int = 8,
                checkpointing: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = new_model(preset_name, feature_dim, vocab_size, max_words, max_frames, num_answers)
    if checkpointing:
        enable_checkpointing(model)
    return apply_adapters(model, adapters, rank=lora_rank, alpha=2 * lora_rank)


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing on every transformer block (transformers' own, non-reentrant: it recomputes
    each block's activations in the backward instead of keeping them, and supports double backward)."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_count(name: str, feature_dim: int = 1024, vocab_size: int = 30522) -> int:
    """Exact parameter count of a preset's model, built on the meta device (no memory, no init time)."""
    p = get_preset(name)
    with torch.device("meta"):
        model = new_model(name, feature_dim, vocab_size, p.words, bench_frames(name))
    return count_parameters(model)
