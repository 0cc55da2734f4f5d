"""Video-language models."""
