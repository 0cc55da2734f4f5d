"""Parameter-efficient fine-tuning: LoRA adapters (peft) on every attention and feed-forward projection.

With adapters on, only the LoRA matrices and the task heads train; the backbone is frozen. Everything
downstream reads "the trainable parameters" (`p.requires_grad`): the optimiser, DDP, and MELTR's meta step,
whose hypergradient is then taken over the adapters (and heads) only.
"""
from __future__ import annotations

from torch import nn

from ..errors import MeltrError

ADAPTERS = ("none", "lora")
# Each model class names its LoRA targets (the Linear layers of its transformer blocks) and its heads, which are
# new for a task and so train in full (peft's `modules_to_save`, without the copy): `lora_targets`, `heads`.


def apply_adapters(model: nn.Module, adapters: str = "none", rank: int = 8, alpha: int = 16,
                   dropout: float = 0.0) -> nn.Module:
    """Inject the adapters in place and freeze what they replace; "none" leaves the model as it is."""
    if adapters not in ADAPTERS:
        raise MeltrError(f"adapters {adapters!r}: expected one of {', '.join(ADAPTERS)}")
    if adapters == "none":
        return model
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(model.lora_targets),
                        bias="none")
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name or name.split(".")[0] in model.heads
    return model


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
