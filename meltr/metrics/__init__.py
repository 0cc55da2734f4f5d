"""Task metrics computed as the papers' evaluation protocols define them."""
from .retrieval import retrieval_metrics

__all__ = ["retrieval_metrics"]
