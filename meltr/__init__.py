"""meltr: fine-tune video-language models with and without MELTR, and measure what MELTR costs."""
__version__ = "0.1.0"
