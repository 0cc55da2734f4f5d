"""MELTR: the Meta Loss Transformer and its hypergradient estimators."""
from .hypergradient import ESTIMATORS, hypergradient
from .net import NET_PRESETS, MetaLossTransformer

__all__ = ["ESTIMATORS", "NET_PRESETS", "MetaLossTransformer", "hypergradient"]
