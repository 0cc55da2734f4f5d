"""`meltr`: one command with a subcommand per pipeline stage. Every Snakemake rule calls it.

Parameters arrive as explicit flags (the rule passes them from params.yaml); no job reads params.yaml
behind the workflow's back. Flags of `train` and `features` are generated from their config dataclasses,
so a new setting is one dataclass field. Bad input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing

from .errors import MeltrError

log = logging.getLogger("meltr")


# ------------------------------------------------------------------ dataclass <-> flags
def _add_dataclass_flags(parser: argparse.ArgumentParser, cls, prefix: str = "", skip=()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            parser.add_argument(flag, type=_parse_bool, default=None, metavar="BOOL")
        elif kind in (int, float, str):
            parser.add_argument(flag, type=kind, default=None)
        else:  # Optional[...]
            inner = [a for a in typing.get_args(kind) if a is not type(None)]
            parser.add_argument(flag, type=_optional(inner[0] if inner else str), default=None)


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)
    return parse


def _collect(args: argparse.Namespace, cls, prefix: str = "") -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, prefix + f.name, None)
        if value is not None:
            out[f.name] = value
    return out


# ------------------------------------------------------------------ subcommands
def cmd_synth(args) -> None:
    from .data.synth import synth_msrvtt

    counts = synth_msrvtt(args.out, n_train=args.n_train, n_test=args.n_test,
                          captions_per_video=args.captions_per_video, seconds=args.seconds, fps=args.fps,
                          size=args.size, seed=args.seed)
    print(json.dumps(counts))


def cmd_prepare(args) -> None:
    from .data.msrvtt import prepare_msrvtt

    summary = prepare_msrvtt(args.root, args.out, video_dir=args.video_dir, train_list=args.train_list)
    print(json.dumps({k: v for k, v in summary.items()}, default=str))


def cmd_features(args) -> None:
    from .features.extract import FeatureConfig, extract_features
    from .io import read_jsonl

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    records = [r for path in args.manifests for r in read_jsonl(path)]
    cfg = FeatureConfig(**_collect(args, FeatureConfig))
    print(json.dumps(extract_features(records, args.out, cfg)))


def cmd_train(args) -> None:
    from .combiners.meltr import MeltrConfig
    from .train import TrainConfig, train

    fields = _collect(args, TrainConfig)
    fields["meltr"] = _collect(args, MeltrConfig, prefix="meltr_")
    try:
        cfg = TrainConfig(**fields)
        MeltrConfig(**fields["meltr"])  # validate even when the method is not meltr
    except ValueError as exc:
        raise MeltrError(str(exc)) from None
    print(json.dumps(train(args.train_manifest, args.features, args.out, cfg)))


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    metrics = evaluate(args.checkpoint, args.test_manifest, args.features, args.out, args.device)
    print(json.dumps(metrics))


def cmd_report(args) -> None:
    from .report import build_report

    build_report(args.runs, args.summary, args.report_dir, args.metrics)


def cmd_bench_meltr_step(args) -> None:
    from .bench import bench_meltr_step, format_table
    from .combiners.meltr import MeltrConfig
    from .io import write_json

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.k < 1 or args.batch_size < 2:
        raise MeltrError("bench meltr-step: expected --k >= 1 and --batch-size >= 2")
    meltr_cfg = _collect(args, MeltrConfig, prefix="meltr_")
    meltr_cfg.pop("k", None)
    result = bench_meltr_step(args.model, args.k, args.steps, None, args.batch_size, device=args.device,
                              seed=args.seed, meltr_cfg=meltr_cfg)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)


def build_parser() -> argparse.ArgumentParser:
    from .combiners.meltr import MeltrConfig
    from .features.extract import FeatureConfig
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="meltr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the real on-disk format")
    p.add_argument("--dataset", choices=["msrvtt"], default="msrvtt")
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("--n-test", type=int, default=60)
    p.add_argument("--captions-per-video", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("prepare", help="parse a dataset's own files into normalised JSONL manifests")
    p.add_argument("--dataset", choices=["msrvtt"], default="msrvtt")
    p.add_argument("--root", required=True)
    p.add_argument("--video-dir", default="videos")
    p.add_argument("--train-list", default="9k")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("features", help="sample frames and embed them with a vision backbone")
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)
    _add_dataclass_flags(p, FeatureConfig)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="fine-tune one (dataset, task, method, model) cell")
    p.add_argument("--train-manifest", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    _add_dataclass_flags(p, TrainConfig, skip=("meltr",))
    _add_dataclass_flags(p, MeltrConfig, prefix="meltr_", skip=("seed",))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="retrieval metrics of a checkpoint on the test split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--test-manifest", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="summary.csv, report.md and plots from finished runs")
    p.add_argument("--runs", nargs="+", required=True, help="run directories")
    p.add_argument("--summary", required=True)
    p.add_argument("--report-dir", required=True)
    p.add_argument("--metrics", required=True, help="nested metrics JSON for dvc metrics")
    p.set_defaults(func=cmd_report)

    bench = sub.add_parser("bench", help="throughput benchmarks").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("meltr-step", help="step time of finetune, multitask and meltr per estimator")
    p.add_argument("--model", default="tiny")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="timed steps (at least 20, rounded up to a multiple of k)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the numbers here")
    _add_dataclass_flags(p, MeltrConfig, prefix="meltr_", skip=("seed", "k", "estimator"))
    p.set_defaults(func=cmd_bench_meltr_step)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        args.func(args)
    except MeltrError as exc:
        print(f"meltr {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
