"""Task metrics computed as the papers' evaluation protocols define them."""
from .captioning import caption_metrics
from .qa import chance_p_value, count_mse, qa_accuracy
from .retrieval import retrieval_metrics
from .sentiment import sentiment_metrics

__all__ = ["caption_metrics", "chance_p_value", "count_mse", "qa_accuracy", "retrieval_metrics",
           "sentiment_metrics"]
