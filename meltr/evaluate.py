"""Score a trained model on its evaluation split, by the protocol of its task family (docs/datasets.md §6).

    retrieval         t2v and v2t R@1/5/10, MedR, MeanR (one caption per clip: MSRVTT 1k-A, YouCook2 val)
    captioning        BLEU-1..4, METEOR, ROUGE-L, CIDEr against every reference, greedy and beam search
    multiple_choice   accuracy (%) over the options' scores (TGIF Action/Transition, TVQA val), and the
                      exact binomial probability of doing as well by guessing (chance_p_value)
    open_ended        accuracy (%) over the training answers; out-of-vocabulary answers per `out_of_vocabulary`
    count             MSE after rounding and clipping to [1, 10]
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .data.batching import tokenize
from .data.records import read_records
from .data.samplers import task_tensors, text_length
from .errors import MeltrError
from .features.store import FeatureStore
from .io import ensure_writable, write_json
from .metrics import caption_metrics, chance_p_value, count_mse, qa_accuracy, retrieval_metrics
from .metrics.captioning import open_meteor
from .models.tokenizer import load_tokenizer
from .models.build import build_model
from .train.device import resolve_device

CHUNK = 32  # records per forward at evaluation


def load_checkpoint(path: str, device: torch.device):
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        cfg = ckpt["config"]
    except FileNotFoundError:
        raise MeltrError(f"{path}: checkpoint not found") from None
    except (KeyError, RuntimeError, EOFError) as exc:
        raise MeltrError(f"{path}: expected a meltr checkpoint ({exc})") from None
    words = text_length(cfg, ckpt.get("family", "retrieval"))
    model = build_model(cfg["model"], ckpt["feature_dim"], ckpt["vocab_size"], words, ckpt["frames"],
                        cfg["seed"], num_answers=max(1, len(ckpt.get("answers", []))),
                        adapters=cfg.get("adapters", "none"), lora_rank=cfg.get("lora_rank", 8))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


@torch.no_grad()
def evaluate(checkpoint: str, test_manifest: str, features_dir: str, out: str, device: str = "auto",
             beam_size: int = 3, out_of_vocabulary: str = "wrong", meteor: bool = True) -> dict:
    ensure_writable(Path(out).parent)
    dev = resolve_device(device)
    model, ckpt = load_checkpoint(checkpoint, dev)
    cfg, family = ckpt["config"], ckpt.get("family", "retrieval")
    records = read_records(test_manifest, family)  # the manifest first: its errors say more than the store's
    store = FeatureStore(features_dir)
    # Clips whose video was skipped as broken (features.on_bad_video: skip) are left out and listed.
    records, dropped = store.keep_available(records, str(test_manifest))
    video = torch.from_numpy(store.get([r["video_id"] for r in records]))
    ev = _Eval(model, load_tokenizer(), family, text_length(cfg, family), dev)
    metrics = {"dataset": cfg["dataset"], "task": cfg["task"], "family": family, "method": cfg["method"],
               "model": cfg["model"], "n_test": len(records),
               "skipped": {"records": len(dropped), "videos": sorted({r["video"] for r in dropped})}}
    if family == "retrieval":
        metrics.update(ev.retrieval(records, video))
    elif family == "captioning":
        metrics.update(ev.captioning(records, video, beam_size, meteor))
    elif family == "multiple_choice":
        metrics.update(ev.multiple_choice(records, video))
    elif family == "open_ended":
        metrics.update(ev.open_ended(records, video, ckpt["answers"], out_of_vocabulary))
    else:
        metrics.update(ev.count(records, video, ckpt.get("train_answer_mean")))
    _check_finite(metrics, str(checkpoint))
    write_json(out, metrics)
    return metrics


def _check_finite(metrics: dict, checkpoint: str, where: str = "") -> None:
    """No metric may be NaN or infinite: it would be scored into the report as a number."""
    for key, value in metrics.items():
        name = f"{where}{key}"
        if isinstance(value, dict):
            _check_finite(value, checkpoint, name + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            raise MeltrError(f"{checkpoint}: metric {name} is {value}; expected finite scores (a checkpoint or "
                             "features with non-finite values)")


def _p_above_chance(percent: float, n: int, chance: float) -> float:
    """chance_p_value of a percentage of n items (R@1, accuracy), from the count behind it."""
    return chance_p_value(round(percent * n / 100), n, chance)


class _Eval:
    """The protocols, through the evaluation interface both model families answer (caption_ids,
    retrieval_scores, option_scores, answer_texts, count_predictions)."""

    def __init__(self, model, tokenizer, family: str, max_words: int, device: torch.device):
        self.model, self.tok, self.family, self.max_words, self.dev = model, tokenizer, family, max_words, device

    def _video(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = video.to(self.dev)
        return v, torch.ones(v.shape[:2], dtype=torch.long, device=self.dev)

    def _chunks(self, video: torch.Tensor, task: dict | None = None):
        """(first row, clips, mask, the task tensors of those rows) for CHUNK clips at a time, on the device."""
        for i in range(0, len(video), CHUNK):
            rows = {k: v[i:i + CHUNK].to(self.dev) for k, v in (task or {}).items()}
            yield (i, *self._video(video[i:i + CHUNK]), rows)

    def retrieval(self, records, video) -> dict:
        bad = [r["video_id"] for r in records if len(r["captions"]) != 1]
        if bad:
            raise MeltrError(f"retrieval test: expected exactly one caption per clip (1k-A protocol), "
                             f"clip {bad[0]!r} has {len(records[0]['captions'])}")
        text = tokenize(self.tok, [r["captions"][0] for r in records], self.max_words)
        v, vm = self._video(video)
        sim = self.model.retrieval_scores(text.ids.to(self.dev), text.mask.to(self.dev), v, vm)
        sim = sim.float().cpu().numpy()
        t2v, n = retrieval_metrics(sim), len(records)
        # Random scores put each caption's clip first with probability 1/n, independently per caption
        return {"chance_R1": 100.0 / n, "t2v": t2v, "v2t": retrieval_metrics(sim.T),
                "chance_p_value": _p_above_chance(t2v["R1"], n, 1.0 / n)}

    def captioning(self, records, video, beam_size: int, meteor: bool) -> dict:
        refs = {r["id"]: list(r["captions"]) for r in records}
        out = {"beam_size": beam_size}
        # java starts now and loads METEOR's paraphrase table while the model decodes
        with open_meteor(meteor) as scorer:
            for name, beams in (("greedy", 1), ("beam", beam_size)):
                out.update(self._captions(records, video, refs, name, beams, scorer))
        return out

    def _captions(self, records, video, refs, name: str, beams: int, scorer) -> dict:
        """{name: metrics, name_examples: five captions}, decoding with `beams` (1: greedy)."""
        hyps = {}
        for i, v, vm, _ in self._chunks(video):
            ids = self.model.caption_ids(v, vm, self.tok.cls_token_id, self.tok.sep_token_id, self.max_words - 1,
                                         beams)
            for rec, seq in zip(records[i:i + CHUNK], ids):
                hyps[rec["id"]] = self.tok.decode(seq, skip_special_tokens=True).strip()
        return {name: caption_metrics(refs, hyps, meteor=scorer),
                f"{name}_examples": {k: hyps[k] for k in list(hyps)[:5]}}

    def multiple_choice(self, records, video) -> dict:
        labelled = [i for i, r in enumerate(records) if r["answer"] is not None]
        if not labelled:
            raise MeltrError("multiple-choice test: expected answers (TVQA test_public has none; evaluate on val)")
        records, video = [records[i] for i in labelled], video[labelled]
        task = task_tensors(records, self.tok, self.family, self.max_words)
        preds = []
        for _, v, vm, rows in self._chunks(video, task):
            preds += self.model.option_scores(rows, v, vm).argmax(1).tolist()
        acc = qa_accuracy({r["id"]: p for r, p in zip(records, preds)}, {r["id"]: r["answer"] for r in records})
        chance = 1.0 / len(records[0]["options"])
        return {"chance_accuracy": 100.0 * chance, **acc,
                "chance_p_value": _p_above_chance(acc["accuracy"], acc["n"], chance)}

    def open_ended(self, records, video, answers: list[str], out_of_vocabulary: str) -> dict:
        task = task_tensors(records, self.tok, self.family, self.max_words, answers, with_answers=False)
        predicted = [a for _, v, vm, rows in self._chunks(video, task)
                     for a in self.model.answer_texts(rows, v, vm, answers, self.tok)]
        truth = {r["id"]: r["answer"] for r in records}
        acc = qa_accuracy({r["id"]: a for r, a in zip(records, predicted)}, truth,
                          vocabulary=set(answers), out_of_vocabulary=out_of_vocabulary)
        # The baseline a classifier must beat: always the most frequent training answer.
        base = qa_accuracy({r["id"]: answers[0] for r in records}, truth, vocabulary=set(answers),
                           out_of_vocabulary=out_of_vocabulary)
        return {**acc, "answer_vocabulary": len(answers), "most_frequent_answer_accuracy": base["accuracy"]}

    def count(self, records, video, train_mean: float | None) -> dict:
        task = task_tensors(records, self.tok, self.family, self.max_words)
        preds = torch.cat([self.model.count_predictions(rows, v, vm).float().cpu()
                           for _, v, vm, rows in self._chunks(video, task)]).numpy()
        truth = {r["id"]: int(r["answer"]) for r in records}
        res = count_mse({r["id"]: float(p) for r, p in zip(records, preds)}, truth)
        if train_mean is not None:  # the baseline: always the training mean
            res["constant_mean_MSE"] = count_mse({r["id"]: float(train_mean) for r in records}, truth)["MSE"]
        res["prediction_mean"] = float(np.mean(preds))
        return res
