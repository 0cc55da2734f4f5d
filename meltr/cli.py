"""`meltr`: one command with a subcommand per pipeline stage. Every Snakemake rule calls it.

Parameters arrive as explicit flags (the rule passes them from params.yaml); no job reads params.yaml
behind the workflow's back. Flags of `train` and `features` are generated from their config dataclasses,
so a new setting is one dataclass field. Bad input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import typing

from .data.synth import WRITERS
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
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, type=typing.get_args(kind)[0], nargs="+", default=None)
        elif kind is dict:
            continue  # nested sections have their own flags
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


# ------------------------------------------------------------------ function keywords <-> flags
# `synth` and `prepare` serve four datasets whose writers and loaders take different keywords: the flags are
# the union of those keywords, and a flag the chosen dataset does not take is an error, not ignored.
def _function(spec: str):
    """'package.module:function' -> the function."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _add_keyword_flags(parser: argparse.ArgumentParser, functions) -> list[str]:
    from .data.registry import keyword_options

    names: dict[str, type] = {}
    for fn in functions:
        for n, p in keyword_options(fn).items():
            d = p.default
            names.setdefault(n, type(d) if isinstance(d, (bool, int, float)) else str)
    for n, kind in sorted(names.items()):
        flag = "--" + n.replace("_", "-")
        parser.add_argument(flag, type=_parse_bool if kind is bool else _optional(kind), default=None)
    return sorted(names)


def _pick_keywords(args: argparse.Namespace, fn, flags: list[str], what: str) -> dict:
    """The flags given on the command line, checked against what `fn` takes."""
    from .data.registry import keyword_options

    given = {n: getattr(args, n) for n in flags if getattr(args, n, None) is not None}
    accepted = keyword_options(fn)
    wrong = sorted(set(given) - set(accepted))
    if wrong:
        raise MeltrError(f"{what}: option(s) {', '.join('--' + w.replace('_', '-') for w in wrong)} do not apply; "
                         f"expected any of {', '.join('--' + a.replace('_', '-') for a in accepted) or 'none'}")
    return given


def _collect(args: argparse.Namespace, cls, prefix: str = "") -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, prefix + f.name, None)
        if value is not None:
            out[f.name] = value
    return out


# ------------------------------------------------------------------ subcommands
def _set_threads(threads: int | None) -> None:
    """--threads N: torch's intra-op threads (None: torch's own choice)."""
    if threads is None:
        return
    if threads < 1:
        raise MeltrError(f"--threads: expected an integer >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def cmd_synth(args) -> None:
    fn = _function(WRITERS[args.dataset])
    kwargs = _pick_keywords(args, fn, args.keyword_flags, f"synth --dataset {args.dataset}")
    print(json.dumps(fn(args.out, **kwargs), default=str))


def _loader_options(args) -> dict:
    from .data.registry import loader

    return _pick_keywords(args, loader(args.dataset), args.keyword_flags, f"{args.command} --dataset {args.dataset}")


def cmd_prepare(args) -> None:
    from .data.registry import prepare

    summary = prepare(args.dataset, args.task, args.root, args.out, check_media=args.check_media,
                      **_loader_options(args))
    print(json.dumps(summary, default=str))


def cmd_data_check(args) -> None:
    from .data.registry import check

    print(json.dumps(check(args.dataset, args.root, **_loader_options(args)), default=str))


def cmd_features(args) -> None:
    from .config import FeatureConfig
    from .features.extract import extract_features
    from .io import read_jsonl

    _set_threads(args.threads)
    records = [r for path in args.manifests for r in read_jsonl(path)]
    cfg = FeatureConfig(**_collect(args, FeatureConfig))
    if args.s3d:  # UniVL's pre-extracted S3D features replace frame decoding and the vision backbone
        from .features.s3d import s3d_store

        print(json.dumps(s3d_store(records, args.s3d, args.out, cfg.num_frames)))
        return
    print(json.dumps(extract_features(records, args.out, cfg)))


def cmd_train(args) -> None:
    from .config import MeltrConfig, TrainConfig
    from .train.loop import train

    fields = _collect(args, TrainConfig)
    fields["meltr"] = _collect(args, MeltrConfig, prefix="meltr_")
    cfg = TrainConfig(**fields)
    MeltrConfig(**fields["meltr"])  # validate even when the method is not meltr
    print(json.dumps(train(args.train_manifest, args.features, args.out, cfg)))


def cmd_evaluate(args) -> None:
    from .config import EvaluateConfig
    from .evaluate import evaluate

    _set_threads(args.threads)
    cfg = EvaluateConfig(**_collect(args, EvaluateConfig))
    metrics = evaluate(args.checkpoint, args.test_manifest, args.features, args.out, args.device,
                       beam_size=cfg.beam_size, out_of_vocabulary=cfg.out_of_vocabulary, meteor=cfg.meteor)
    print(json.dumps(metrics))


def cmd_report(args) -> None:
    from .report.build import build_report

    build_report(args.runs, args.summary, args.report_dir, args.metrics, scaling=args.scaling,
                 scaling_csv=args.scaling_csv, slopes_csv=args.slopes_csv, memory_budgets_gb=args.memory_budgets_gb,
                 costs=args.costs)


def cmd_bench_meltr_step(args) -> None:
    from .bench.meltr_step import bench_meltr_step, format_table
    from .config import MeltrConfig
    from .io import write_json

    _set_threads(args.threads)
    if args.k < 1 or args.batch_size < 2:
        raise MeltrError("bench meltr-step: expected --k >= 1 and --batch-size >= 2")
    meltr_cfg = _collect(args, MeltrConfig, prefix="meltr_")
    meltr_cfg.pop("k", None)
    result = bench_meltr_step(args.model, args.k, args.steps, None, args.batch_size, device=args.device,
                              seed=args.seed, meltr_cfg=meltr_cfg, loss_set=args.loss_set)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)


def cmd_bench_scaling(args) -> None:
    from .bench.scaling import GRIDS, format_table, sweep
    from .config import MeltrConfig, ScalingConfig

    _set_threads(args.threads)
    cfg = ScalingConfig(**{**GRIDS[args.grid], **_collect(args, ScalingConfig)},
                        meltr=_collect(args, MeltrConfig, prefix="meltr_"))
    from .train.parallel import is_distributed

    result = sweep(cfg, out_json=args.json)
    if not is_distributed() or __import__("torch").distributed.get_rank() == 0:
        print(format_table(result))
    failed = [f"{p['size']}/{p['method']}" for p in result["points"] if p.get("failed")]
    if failed:
        raise MeltrError(f"bench scaling: {len(failed)} points failed ({', '.join(failed)}); see the log")


def cmd_bench_cost(args) -> None:
    from .bench.cost import task_cost
    from .io import ensure_writable
    from .config import CostConfig, MeltrConfig, TrainConfig
    from .io import write_json

    fields = _collect(args, TrainConfig)
    fields["meltr"] = _collect(args, MeltrConfig, prefix="meltr_")
    cfg = TrainConfig(**{**fields, "method": "meltr"})  # the method is per contender; validate MELTR's settings
    MeltrConfig(**fields["meltr"])
    cost = CostConfig(**_collect(args, CostConfig))
    ensure_writable(os.path.dirname(os.path.abspath(args.out)))
    result = task_cost(args.train_manifest, args.features, cfg, args.methods, cost.rounds, cost.warmup)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "methods"}))


class _Lazy:
    """A config dataclass imported only when its subcommand runs: importing torch and transformers takes
    seconds, and `synth`, `prepare`, `data check` and `report` (most jobs of a run) need neither."""

    def __init__(self, module: str, name: str, wanted: bool):
        self.module, self.name, self.wanted = module, name, wanted

    def flags(self, parser, **kw) -> None:
        if self.wanted:
            _add_dataclass_flags(parser, getattr(importlib.import_module(self.module), self.name), **kw)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; `command` (the subcommand about to run, None: all) limits the heavy imports to it."""
    def want(*names):
        return command is None or command in names

    MeltrConfig = _Lazy("meltr.config", "MeltrConfig", want("train", "bench"))
    FeatureConfig = _Lazy("meltr.config", "FeatureConfig", want("features"))
    TrainConfig = _Lazy("meltr.config", "TrainConfig", want("train", "bench"))
    ScalingConfig = _Lazy("meltr.config", "ScalingConfig", want("bench"))
    CostConfig = _Lazy("meltr.config", "CostConfig", want("bench"))
    EvaluateConfig = _Lazy("meltr.config", "EvaluateConfig", want("evaluate"))

    parser = argparse.ArgumentParser(prog="meltr", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of its one line (also MELTR_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    from .data.registry import DATASETS, loader

    p = sub.add_parser("synth", help="write a synthetic dataset in the real on-disk format")
    p.add_argument("--dataset", choices=list(WRITERS), default="msrvtt")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_synth, keyword_flags=_add_keyword_flags(p, [_function(f) for f in WRITERS.values()]))

    loaders = [loader(d) for d in DATASETS]
    p = sub.add_parser("prepare", help="parse a dataset's own files into normalised JSONL manifests")
    p.add_argument("--dataset", choices=list(DATASETS), default="msrvtt")
    p.add_argument("--task", default="retrieval", help="a task of the dataset (see `meltr data check`)")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--check-media", type=_parse_bool, default=True, metavar="BOOL",
                   help="a referenced video that does not exist is an error (default true)")
    p.set_defaults(func=cmd_prepare, keyword_flags=_add_keyword_flags(p, loaders))

    data = sub.add_parser("data", help="inspect datasets").add_subparsers(dest="data", required=True)
    p = data.add_parser("check", help="validate a download: counts per task and split, missing media (JSON)")
    p.add_argument("--dataset", choices=list(DATASETS), required=True)
    p.add_argument("--root", required=True)
    p.set_defaults(func=cmd_data_check, keyword_flags=_add_keyword_flags(p, loaders))

    p = sub.add_parser("features", help="sample frames and embed them with a vision backbone")
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--s3d", default=None, help="UniVL's S3D feature pickle: use it instead of decoding frames")
    FeatureConfig.flags(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="fine-tune one (dataset, task, method, model) cell")
    p.add_argument("--train-manifest", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    TrainConfig.flags(p, skip=("meltr",))
    MeltrConfig.flags(p, prefix="meltr_", skip=("seed",))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="task metrics of a checkpoint on the evaluation split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--test-manifest", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    EvaluateConfig.flags(p)  # --beam-size, --out-of-vocabulary wrong|exclude, --meteor BOOL
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="summary.csv, report.md and plots from finished runs")
    p.add_argument("--runs", nargs="+", required=True, help="run directories")
    p.add_argument("--summary", required=True)
    p.add_argument("--report-dir", required=True)
    p.add_argument("--metrics", required=True, help="nested metrics JSON for dvc metrics")
    p.add_argument("--costs", nargs="*", default=None, help="`meltr bench cost` JSON files: the cost ratios")
    p.add_argument("--scaling", nargs="*", default=None, help="`meltr bench scaling` JSON files: adds the scaling section")
    p.add_argument("--scaling-csv", default=None, help="every scaling point, one row each (DVC plots)")
    p.add_argument("--slopes-csv", default=None, help="fitted scaling slopes per device, method and k")
    p.add_argument("--memory-budgets-gb", type=float, nargs="+", default=[24, 80, 141],
                   help="memory budgets for the largest-size-that-fits table")
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
    p.add_argument("--loss-set", choices=["univl5", "univl8"], default="univl8",
                   help="the retrieval losses: UniVL's five or MELTR-UniVL's eight (default)")
    MeltrConfig.flags(p, prefix="meltr_", skip=("seed", "k", "estimator"))
    p.set_defaults(func=cmd_bench_meltr_step)

    p = bench.add_parser("cost", help="one task's methods on its own model and batches, interleaved: the ratios "
                                      "the report states (JSON)")
    p.add_argument("--train-manifest", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--methods", nargs="+", choices=["finetune", "multitask", "meltr"],
                   default=["finetune", "multitask", "meltr"])
    CostConfig.flags(p)
    TrainConfig.flags(p, skip=("meltr", "method", "steps", "checkpoint_every", "timing_warmup", "nan_patience"))
    MeltrConfig.flags(p, prefix="meltr_", skip=("seed",))
    p.set_defaults(func=cmd_bench_cost)

    p = bench.add_parser("scaling", help="sizes x methods x k x batch size x adapters: throughput, memory, "
                                         "FLOPs, MFU; out-of-memory points recorded (torchrun: N processes)")
    p.add_argument("--json", default=None, help="write the points here (rewritten after every size)")
    p.add_argument("--grid", choices=["cpu", "gpu"], default="cpu",
                   help="named defaults: cpu (4 small sizes, the default run) or gpu (100M to 7B, ~8 min on an H100)")
    p.add_argument("--threads", type=int, default=None)
    ScalingConfig.flags(p)
    MeltrConfig.flags(p, prefix="meltr_", skip=("seed", "k", "estimator", "meta_batches"))
    p.set_defaults(func=cmd_bench_scaling)
    return parser


def _one_line(exc: BaseException) -> str:
    """What went wrong, on one line: the file an OS error names, and the error's own words."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"expected UTF-8 text, got byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _where(exc: BaseException) -> str:
    """The innermost frame of the package in the exception's traceback: where a bug shows itself."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f"{os.sep}meltr{os.sep}" in f.filename]
    return f"{os.path.relpath(frames[-1].filename)}:{frames[-1].lineno}" if frames else "?"


def main(argv: list[str] | None = None) -> int:
    """Every error that reaches here is one line on stderr: bad input, settings or environment (a MeltrError,
    a file that cannot be read or written, a disk that is full) exit with 2, Ctrl-C with 130 (a training job's
    last checkpoint is intact: rerun to resume), anything else, a bug, with 1 and where it happened. With
    --debug or MELTR_DEBUG=1 the traceback is shown instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    debug = args.debug or os.environ.get("MELTR_DEBUG", "") not in ("", "0")
    head = f"meltr {args.command}"
    try:
        args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{head}: interrupted (a training job keeps its last checkpoint: rerun to resume)", file=sys.stderr)
        return 130
    except (MeltrError, OSError, UnicodeError) as exc:
        if debug:
            raise
        print(f"{head}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line that says where, the traceback on request
        if debug:
            raise
        print(f"{head}: internal error: {type(exc).__name__}: {_one_line(exc)[:300]} (at {_where(exc)}; rerun "
              "with --debug or MELTR_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0
