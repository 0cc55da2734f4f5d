"""Per-video visual features: decord frame sampling -> a transformers vision backbone -> the store.

Backbones: `clip` (CLIPVisionModel, frame by frame, CLIP4Clip-style) and `videomae` (VideoMAEModel over
the clip). Pretrained weights only from a local folder (`pretrained`); otherwise a size preset with
random init, which is what the synthetic benchmark uses. Random-init features are random projections
of the pixels: `pool: grid` keeps the [CLS] token plus the mean patch token of each image quadrant so that
position (and so motion) stays linearly readable. `frame_diff` appends each frame's change from the previous
one: a direction of motion then survives averaging over frames, which is how the QA heads read a clip.
`frames_per_token` > 1 concatenates that many consecutive sampled frames into one stored row: a clip can be
sampled densely (every frame of a short GIF) and still cost the models num_frames / frames_per_token tokens.
"""
from __future__ import annotations

import logging
from pathlib import Path


import numpy as np
import torch
from tqdm import tqdm

from ..config import FeatureConfig
from ..data.video import sample_frames
from ..errors import MeltrError
from ..io import ensure_writable
from .presets import VISION_PRESETS
from .store import write_store

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

logger = logging.getLogger(__name__)



def build_backbone(cfg: FeatureConfig) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)  # random init must be the same in every run
    if cfg.backbone == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if cfg.pretrained:
            return CLIPVisionModel.from_pretrained(cfg.pretrained, local_files_only=True)
        return CLIPVisionModel(CLIPVisionConfig(image_size=cfg.image_size, patch_size=cfg.patch_size,
                                                **VISION_PRESETS[cfg.preset]))
    from transformers import VideoMAEConfig, VideoMAEModel

    if cfg.pretrained:
        return VideoMAEModel.from_pretrained(cfg.pretrained, local_files_only=True)
    return VideoMAEModel(VideoMAEConfig(image_size=cfg.image_size, patch_size=cfg.patch_size,
                                        num_frames=cfg.num_frames, tubelet_size=2, **VISION_PRESETS[cfg.preset]))


def _pool(hidden: torch.Tensor, pool: str, grid: int, has_cls: bool) -> torch.Tensor:
    """hidden: (N, tokens, H) -> (N, H') per image."""
    cls = hidden[:, 0] if has_cls else hidden.mean(1)
    patches = hidden[:, 1:] if has_cls else hidden
    if pool == "cls":
        return cls
    if pool == "mean":
        return patches.mean(1)
    side = grid
    p = patches.reshape(patches.shape[0], side, side, -1)
    half = side // 2
    quadrants = [p[:, :half, :half], p[:, :half, half:], p[:, half:, :half], p[:, half:, half:]]
    return torch.cat([cls] + [q.mean((1, 2)) for q in quadrants], dim=-1)


@torch.no_grad()
def embed_frames(model, frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """frames: (V, T, S, S, 3) uint8 -> (V, T / frames_per_token, D) float32 for `clip`; (V, 1, D) for
    `videomae`."""
    v, t = frames.shape[:2]
    x = (frames.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    x = torch.from_numpy(x).permute(0, 1, 4, 2, 3)  # (V, T, 3, S, S)
    if cfg.backbone == "clip":
        hidden = model(pixel_values=x.reshape(v * t, *x.shape[2:])).last_hidden_state
        grid = cfg.image_size // model.config.patch_size
        pooled = _pool(hidden, cfg.pool, grid, has_cls=True).reshape(v, t, -1)
        if cfg.frame_diff:
            pooled = torch.cat([pooled, torch.diff(pooled, dim=1, prepend=pooled[:, :1])], dim=-1)
        return pooled.reshape(v, t // cfg.frames_per_token, -1).numpy()
    hidden = model(pixel_values=x).last_hidden_state  # (V, tokens, H): tubelets, no CLS
    return hidden.mean(1, keepdim=True).numpy()


def extract_features(records: list[dict], out_dir: str, cfg: FeatureConfig, progress: bool = True) -> dict:
    """records: manifest records with `video_id`, `video` and optionally the clip window `start`/`end` (seconds)
    and `fps` (frame folders). One feature row per video_id. Writes the store; returns its summary."""
    videos: dict[str, dict] = {}
    for r in records:
        videos.setdefault(r["video_id"], {"path": r["video"], "start": r.get("start"), "end": r.get("end"),
                                          "fps": r.get("fps")})
    ids = sorted(videos)
    if not ids:
        raise MeltrError("features: the manifests list no videos")
    ensure_writable(Path(out_dir).parent)  # the store is built beside its final name, then renamed
    model = build_backbone(cfg).eval()
    chunks, kept, skipped, clamped = [], [], [], []
    bar = tqdm(range(0, len(ids), cfg.batch_size), desc="features", unit="batch", disable=not progress)
    for first in bar:
        frames = []
        for v in ids[first:first + cfg.batch_size]:
            src = videos[v]
            notes: dict = {}
            try:
                frames.append(sample_frames(src["path"], cfg.num_frames, cfg.image_size, start=src["start"],
                                            end=src["end"], fps=src["fps"], notes=notes))
            except MeltrError as exc:
                if cfg.on_bad_video == "error":
                    raise
                logger.warning("skipping %s: %s", v, exc)
                skipped.append({"video_id": v, "video": src["path"], "error": str(exc)})
                continue
            kept.append(v)
            if "clamped_s" in notes:  # a segment that ends past its video: cut to the video, counted
                clamped.append({"video_id": v, "past_end_s": round(notes["clamped_s"], 3)})
        if frames:
            chunks.append(embed_frames(model, np.stack(frames), cfg))
    if not kept:
        raise MeltrError(f"features: every one of the {len(ids)} videos failed to decode (first: {skipped[0]['error']})")
    feats = np.concatenate(chunks)
    meta = {"backbone": cfg.backbone, "preset": None if cfg.pretrained else cfg.preset,
            "pretrained": cfg.pretrained, "num_frames": cfg.num_frames, "image_size": cfg.image_size,
            "pool": cfg.pool, "frame_diff": cfg.frame_diff,
            "frames_per_token": cfg.frames_per_token, "skipped": skipped, "clamped": clamped}
    if clamped:
        worst = max(clamped, key=lambda c: c["past_end_s"])
        logger.warning("%d clips end past their video and were cut to it (most: %s by %.3f s)", len(clamped),
                       worst["video_id"], worst["past_end_s"])
    write_store(out_dir, kept, feats, meta)
    return {"videos": len(kept), "skipped": len(skipped), "clamped": len(clamped), "shape": list(feats.shape)}
