"""Text-to-video and video-to-text retrieval on the 1k-A-style test split (one caption per video)."""
from __future__ import annotations

import torch

from .data.batching import tokenize
from .errors import MeltrError
from .features.store import FeatureStore
from .io import read_jsonl, write_json
from .metrics import retrieval_metrics
from .models.tokenizer import load_tokenizer
from .train import build_model, resolve_device


def load_checkpoint(path: str, device: torch.device):
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        cfg = ckpt["config"]
    except FileNotFoundError:
        raise MeltrError(f"{path}: checkpoint not found") from None
    except (KeyError, RuntimeError, EOFError) as exc:
        raise MeltrError(f"{path}: expected a meltr checkpoint ({exc})") from None
    model = build_model(cfg["model"], ckpt["feature_dim"], ckpt["vocab_size"], cfg["max_words"], ckpt["frames"],
                        cfg["seed"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg


def evaluate(checkpoint: str, test_manifest: str, features_dir: str, out: str, device: str = "auto") -> dict:
    dev = resolve_device(device)
    model, cfg = load_checkpoint(checkpoint, dev)
    records = read_jsonl(test_manifest)
    bad = [r.get("video_id") for r in records if len(r.get("captions", [])) != 1]
    if bad:
        raise MeltrError(f"{test_manifest}: expected exactly one caption per test video (1k-A protocol), "
                         f"video {bad[0]!r} has another count")
    text = tokenize(load_tokenizer(), [r["captions"][0] for r in records], cfg["max_words"])
    video = torch.from_numpy(FeatureStore(features_dir).get([r["video_id"] for r in records]))
    sim = model.retrieval_scores(text.ids.to(dev), text.mask.to(dev), video.to(dev),
                                 torch.ones(video.shape[:2], dtype=torch.long, device=dev)).float().cpu().numpy()
    n = len(records)
    metrics = {"dataset": cfg["dataset"], "task": cfg["task"], "method": cfg["method"], "model": cfg["model"],
               "n_test": n, "chance_R1": 100.0 / n,
               "t2v": retrieval_metrics(sim), "v2t": retrieval_metrics(sim.T)}
    write_json(out, metrics)
    return metrics
