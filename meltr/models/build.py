"""Building a model from a size preset: the one place that turns settings into a module (random init, seeded)."""
from __future__ import annotations

import torch
from torch import nn

from .adapters import apply_adapters
from .presets import get_preset
from .univl import VideoLanguageModel


def max_positions(frames: int) -> int:
    """Video positions a model is built with: at least 32, so short clips share one shape."""
    return max(32, frames)


def build_model(preset_name: str, feature_dim: int, vocab_size: int, max_words: int, max_frames: int,
                seed: int, num_answers: int = 1, adapters: str = "none", lora_rank: int = 8) -> VideoLanguageModel:
    torch.manual_seed(seed)
    model = VideoLanguageModel(get_preset(preset_name), feature_dim, vocab_size, max_words, max_positions(max_frames),
                               num_answers=num_answers)
    return apply_adapters(model, adapters, rank=lora_rank, alpha=2 * lora_rank)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_count(name: str, feature_dim: int = 1024, vocab_size: int = 30522) -> int:
    """Exact parameter count of a preset's model, built on the meta device (no memory, no init time)."""
    p = get_preset(name)
    with torch.device("meta"):
        model = VideoLanguageModel(p, feature_dim, vocab_size, p.words, max_positions(p.frames))
    return count_parameters(model)
