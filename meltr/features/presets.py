"""Vision backbones of the feature stage and their random-init sizes (pure data)."""
from __future__ import annotations

BACKBONES = ("clip", "videomae")
VISION_PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "small": dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4),
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
}
POOLS = ("cls", "mean", "grid")
