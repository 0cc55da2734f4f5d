"""The Meta Loss Transformer (Ko et al., CVPR 2023), ported from the official `MELTR` class.

Each scalar loss L_m becomes a token Linear(h1->h2)(ReLU(Linear(1->h1)(L_m))) plus a learned embedding of
its loss type (no positional encoding: identity comes only from that embedding); one post-LN
TransformerEncoderLayer(h2, 8 heads, f) mixes the tokens; mean-pool; bias-free Linear(h2->1). The output
is unconstrained (it can go negative), as in the official code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MeltrNetPreset:
    f_dim: int
    h1: int
    h2: int
    heads: int = 8


# The official per-backbone sizes (meltr-official.md §1).
NET_PRESETS = {
    "univl": MeltrNetPreset(f_dim=512, h1=128, h2=256),
    "violet_retrieval": MeltrNetPreset(f_dim=512, h1=256, h2=512),
    "violet_qa": MeltrNetPreset(f_dim=256, h1=128, h2=256),
    "allinone": MeltrNetPreset(f_dim=128, h1=128, h2=128),
}


class MetaLossTransformer(nn.Module):
    def __init__(self, num_losses: int, f_dim: int = 512, h1: int = 128, h2: int = 256, heads: int = 8,
                 dropout: float = 0.0, init_std: float = 0.0):
        super().__init__()
        self.num_losses = num_losses
        self.task_embedding = nn.Embedding(num_losses, h2)
        self.scale_emb = nn.Sequential(nn.Linear(1, h1), nn.ReLU(), nn.Linear(h1, h2))
        # UniVL runs MELTR in eval mode (no dropout); dropout is kept as a setting for Violet's behaviour.
        self.encoder = nn.TransformerEncoderLayer(h2, heads, f_dim, dropout=dropout, batch_first=True)
        self.out = nn.Linear(h2, 1, bias=False)
        if init_std > 0:  # All-in-one: every Linear and Embedding weight from N(0, init_std), biases zero
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """losses: (M,) vector of the current loss values, NOT detached. Returns the unified scalar loss."""
        tokens = self.scale_emb(losses.reshape(-1, 1)) + self.task_embedding.weight
        mixed = self.encoder(tokens.unsqueeze(0))
        return self.out(mixed.mean(dim=1)).reshape(())
