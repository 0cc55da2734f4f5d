"""Loss combiners by name: the methods the pipeline compares."""
from __future__ import annotations

from ..config import MeltrConfig
from ..errors import MeltrError
from .base import Finetune, LossCombiner, Multitask
from .learned import FAMO, UncertaintyWeighting
from .meltr import MeltrCombiner

REGISTRY: dict[str, type[LossCombiner]] = {
    c.name: c for c in (Finetune, Multitask, UncertaintyWeighting, FAMO, MeltrCombiner)}


def build_combiner(method: str, loss_names: list[str], primary: str, meltr: dict | None = None) -> LossCombiner:
    if method not in REGISTRY:
        raise MeltrError(f"method {method!r}: expected one of {sorted(REGISTRY)}")
    if method == "meltr":
        return MeltrCombiner(loss_names, primary, MeltrConfig(**(meltr or {})))
    return REGISTRY[method](loss_names, primary)


__all__ = ["REGISTRY", "LossCombiner", "MeltrConfig", "build_combiner"]
