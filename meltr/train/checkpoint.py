"""Resumable training checkpoints: everything a resume needs, written atomically, refused when stale."""
from __future__ import annotations

import logging
from dataclasses import asdict

import torch

from ..io import atomic_path
from .parallel import unwrap

logger = logging.getLogger(__name__)


def full_state_dict(model, sharded: bool) -> dict:
    if not sharded:
        return unwrap(model).state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# Settings that do not change what is computed: a checkpoint stays valid across them.
RESUME_IGNORES = ("threads", "device", "checkpoint_every", "timing_warmup")


def fingerprint(cfg) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in RESUME_IGNORES}


def save_checkpoint(path, cfg, model, opt, sched, combiner, state) -> None:
    """Everything a resume needs, written atomically (a kill leaves the previous checkpoint)."""
    blob = {"fingerprint": fingerprint(cfg), "model": model.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict(), "combiner": combiner.state_dict(), "state": state}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path, cfg, model, opt, sched, combiner, device) -> dict | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a checkpoint we cannot read is not worth dying for: start over
        logger.warning("%s: unreadable checkpoint (%s); starting from step 0", path, exc)
        return None
    if blob.get("fingerprint") != fingerprint(cfg):
        logger.warning("%s: checkpoint of different settings; starting from step 0", path)
        return None
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["opt"])
    sched.load_state_dict(blob["sched"])
    combiner.load_state_dict(blob["combiner"])
    logger.info("%s: resuming after step %d", path, blob["state"]["step"])
    return blob["state"]


