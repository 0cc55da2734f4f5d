"""Collect finished runs into one table, a DVC metrics file, and a Markdown report with plots.

Each run directory holds `metrics.json` (quality, from evaluate), `throughput.json` (cost, from train/bench)
and `train_log.jsonl` (one record per training step). The report puts quality and cost side by side, so
that MELTR's throughput price can be read next to what it buys.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import MeltrError
from ..io import read_json_object, read_jsonl
from ..models.presets import FAMILY_LABELS, PRESETS
from .render import fmt, md_table, new_figure, rounded, save_png

METHOD_ORDER = ("finetune", "multitask", "uncertainty", "famo", "meltr")
METHOD_LABEL = {"finetune": "fine-tune", "multitask": "multi-task", "uncertainty": "uncertainty weighting",
                "famo": "FAMO", "meltr": "MELTR"}
GROUP = ["dataset", "task", "model"]

COLUMNS = [
    "dataset", "task", "family", "method", "model", "params_m",
    "metric", "score", "baseline",
    "R1", "R5", "R10", "MedR", "MeanR",
    "v2t_R1", "v2t_R5", "v2t_R10", "v2t_MedR",
    "BLEU4", "METEOR", "ROUGE_L", "CIDEr", "CIDEr_greedy",
    "samples_per_s", "step_ms", "peak_mem_mb", "meta_step_ms",
    "chance_R1", "chance_p", "n_test", "device", "estimator", "meta_batches",
]
# Each family's headline number (`score`) and the level it must beat (`baseline`): chance, or the best
# constant answer where the task has no chance level. Count's MSE is the one where lower is better.
HEADLINE = {
    "retrieval": ("t2v R@1 (%)", "chance"),
    "captioning": ("CIDEr, beam", None),
    "multiple_choice": ("accuracy (%)", "chance"),
    "open_ended": ("accuracy (%)", "most frequent answer"),
    "count": ("MSE (lower is better)", "constant training mean"),
}
# Optional extras: used in the report's text when present, never required.
EXTRA_COLUMNS = ["params", "step_ms_iqr", "batch_size", "steps_timed", "out_of_vocabulary", "skipped_videos",
                 "run_dir"]

T2V_KEYS = ("R1", "R5", "R10", "MedR", "MeanR")
V2T_KEYS = ("R1", "R5", "R10", "MedR")
THROUGHPUT_KEYS = ("params_m", "samples_per_s", "step_ms", "peak_mem_mb", "meta_step_ms", "device", "estimator")
NULLABLE = {"meta_step_ms", "estimator"}  # null when the method has no meta step

# Decimals per column in summary.csv and metrics.json: enough to tell runs apart, no float noise.
DVC_KEYS = ("score", "samples_per_s", "step_ms", "peak_mem_mb")
RETRIEVAL_DVC_KEYS = ("R1", "R5", "R10", "MedR")


# ---------------------------------------------------------------------------------------------------------
# Loading


def _read_json(path: Path) -> dict:
    return read_json_object(path, missing="in every run directory")


def _get(obj: dict, key: str, path: Path, where: str = "", nullable: bool = False) -> Any:
    """obj[key], or a MeltrError naming the file and the (dotted) key."""
    name = f"{where}.{key}" if where else key
    if key not in obj:
        raise MeltrError(f"{path}: missing key '{name}'")
    value = obj[key]
    if value is None and not nullable:
        raise MeltrError(f"{path}: key '{name}' is null, expected a value")
    return value


def _number(obj: dict, key: str, path: Path, where: str = "", nullable: bool = False) -> float:
    value = _get(obj, key, path, where, nullable)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        name = f"{where}.{key}" if where else key
        raise MeltrError(f"{path}: key '{name}' expected a number, got {value!r}")
    return float(value)


def _section(obj: dict, key: str, path: Path) -> dict:
    value = _get(obj, key, path)
    if not isinstance(value, dict):
        raise MeltrError(f"{path}: key '{key}' expected an object of metrics, got {type(value).__name__}")
    return value


def _load_run(run_dir: Path) -> dict:
    """One row of the summary table from one run directory."""
    mpath, tpath = run_dir / "metrics.json", run_dir / "throughput.json"
    metrics, thr = _read_json(mpath), _read_json(tpath)

    row: dict[str, Any] = {k: str(_get(metrics, k, mpath)) for k in ("dataset", "task", "method", "model")}
    row["n_test"] = int(_number(metrics, "n_test", mpath))
    if row["n_test"] <= 0:
        raise MeltrError(f"{mpath}: key 'n_test' expected a positive count, got {row['n_test']}")
    family = row["family"] = str(metrics.get("family", "retrieval"))
    if family not in HEADLINE:
        raise MeltrError(f"{mpath}: key 'family' expected one of {', '.join(HEADLINE)}, got {family!r}")
    row["metric"], row["baseline"] = HEADLINE[family][0], math.nan
    # retrieval and multiple choice: the probability of doing as well by chance (absent from older metrics)
    row["chance_p"] = _number(metrics, "chance_p_value", mpath) if "chance_p_value" in metrics else math.nan
    if family == "retrieval":
        row["chance_R1"] = row["baseline"] = _number(metrics, "chance_R1", mpath)
        t2v, v2t = _section(metrics, "t2v", mpath), _section(metrics, "v2t", mpath)
        row.update({k: _number(t2v, k, mpath, "t2v") for k in T2V_KEYS})
        row.update({f"v2t_{k}": _number(v2t, k, mpath, "v2t") for k in V2T_KEYS})
        row["score"] = row["R1"]
    elif family == "captioning":
        beam, greedy = _section(metrics, "beam", mpath), _section(metrics, "greedy", mpath)
        row.update({k: _number(beam, k, mpath, "beam") for k in ("BLEU4", "ROUGE_L", "CIDEr")})
        row["METEOR"] = _number(beam, "METEOR", mpath, "beam") if "METEOR" in beam else math.nan
        row["CIDEr_greedy"] = _number(greedy, "CIDEr", mpath, "greedy")
        row["score"] = row["CIDEr"]
    elif family == "count":
        row["score"] = _number(metrics, "MSE", mpath)
        row["baseline"] = _number(metrics, "constant_mean_MSE", mpath, nullable=True)
    else:
        row["score"] = _number(metrics, "accuracy", mpath)
        key = "chance_accuracy" if family == "multiple_choice" else "most_frequent_answer_accuracy"
        row["baseline"] = _number(metrics, key, mpath)
        row["out_of_vocabulary"] = metrics.get("out_of_vocabulary") if family == "open_ended" else None

    for key in THROUGHPUT_KEYS:
        if key in ("device", "estimator"):
            value = _get(thr, key, tpath, nullable=key in NULLABLE)
            row[key] = None if value is None else str(value)
        else:
            row[key] = _number(thr, key, tpath, nullable=key in NULLABLE)
    # The MELTR variant is estimator + meta-batch sampling (runs older than the field lack it: null).
    row["meta_batches"] = None if thr.get("meta_batches") is None else str(thr["meta_batches"])
    # A throughput file copied from another run would silently pair the wrong cost with the quality.
    for key in ("method", "model"):
        if key in thr and str(thr[key]) != row[key]:
            raise MeltrError(f"{tpath}: key '{key}' is {thr[key]!r} but {mpath.name} says {row[key]!r}")

    for key in ("params", "step_ms_iqr", "batch_size", "steps_timed"):
        value = thr.get(key)
        row[key] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    row.setdefault("out_of_vocabulary", None)
    skipped = metrics.get("skipped") or {}
    # ';'-joined so that summary.csv keeps one plain column
    row["skipped_videos"] = ";".join(sorted(set(skipped.get("videos", [])) | set(thr.get("skipped_videos") or [])))
    row["run_dir"] = str(run_dir)
    return row


def _method_rank(method: str) -> tuple[int, str]:
    """Known methods in METHOD_ORDER, unknown ones after them, alphabetically."""
    if method in METHOD_ORDER:
        return (METHOD_ORDER.index(method), "")
    return (len(METHOD_ORDER), method)


def collect_runs(run_dirs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run directory, columns COLUMNS then EXTRA_COLUMNS; t2v metrics are R1..MeanR.

    Rows are sorted by dataset, task, model, then method (finetune, multitask, meltr, others A-Z).
    A missing file or key raises MeltrError naming both; so does the same run appearing twice.
    """
    rows = [_load_run(Path(d)) for d in run_dirs]
    if not rows:
        raise MeltrError("report: expected at least one run directory, got none")
    seen: dict[tuple, str] = {}
    for row in rows:
        key = tuple(row[k] for k in (*GROUP, "method"))
        if key in seen:
            raise MeltrError(f"{row['run_dir']}: same dataset/task/model/method {key} as {seen[key]}")
        seen[key] = row["run_dir"]
    rows.sort(key=lambda r: (r["dataset"], r["task"], r["model"], _method_rank(r["method"])))
    return pd.DataFrame(rows, columns=COLUMNS + EXTRA_COLUMNS).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# Ratios


def _ratio(num: float, den: float) -> float:
    """num/den, NaN where either side is missing or the denominator is not positive (e.g. 0 MB on CPU)."""
    if num is None or den is None or pd.isna(num) or pd.isna(den) or den <= 0:
        return math.nan
    return float(num) / float(den)


RATIO_COLS = ["meltr_vs_finetune", "meltr_vs_multitask", "mem_meltr_vs_finetune", "mem_meltr_vs_multitask"]
SPREAD_COLS = ["meltr_vs_finetune_iqr", "meltr_vs_multitask_iqr", "meltr_vs_finetune_usable",
               "meltr_vs_multitask_usable"]


def load_costs(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """The per-task cost files of `meltr bench cost`: one row per (dataset, task, model) with MELTR's ratios
    to each baseline, their IQR over rounds and whether they are usable."""
    rows = []
    for path in paths:
        path = Path(path)
        obj = _read_json(path)
        row = {k: _get(obj, k, path) for k in (*GROUP, "rounds", "device")}
        for col in RATIO_COLS + ["meltr_vs_finetune_iqr", "meltr_vs_multitask_iqr"]:
            row[col] = obj.get(col)
            if row[col] is not None and not isinstance(row[col], (int, float)):
                raise MeltrError(f"{path}: {col}: expected a number or null, got {row[col]!r}")
        for col in ("meltr_vs_finetune_usable", "meltr_vs_multitask_usable"):
            row[col] = bool(obj.get(col, False))
        rows.append(row)
    return pd.DataFrame(rows, columns=GROUP + ["rounds", "device"] + RATIO_COLS + SPREAD_COLS)


def throughput_ratios(df: pd.DataFrame, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (dataset, task, model): MELTR's samples/s and peak memory relative to the baselines.

    `meltr_vs_finetune` = samples/s of meltr / samples/s of finetune (below 1 = MELTR is slower);
    `mem_*` the same for peak memory (above 1 = MELTR needs more). With `costs` (`load_costs`) the ratios are
    those of the task's cost job, methods interleaved in one process, with their IQR over rounds and a usable
    flag. Without, they divide the separate training jobs, which a shared machine can skew at will: they are
    then marked unusable (`source: separate training jobs`). NaN where a method is missing.
    """
    by_cell = {tuple(r[k] for k in GROUP): r for _, r in costs.iterrows()} if costs is not None else {}
    out = []
    for key, group in df.groupby(GROUP, sort=True):
        row = {**dict(zip(GROUP, key))}
        if key in by_cell:
            cost = by_cell[key]
            row.update({c: (math.nan if cost[c] is None or pd.isna(cost[c]) else float(cost[c]))
                        for c in RATIO_COLS + ["meltr_vs_finetune_iqr", "meltr_vs_multitask_iqr"]})
            row.update(meltr_vs_finetune_usable=bool(cost["meltr_vs_finetune_usable"]),
                       meltr_vs_multitask_usable=bool(cost["meltr_vs_multitask_usable"]),
                       source=f"cost job, methods interleaved, {int(cost['rounds'])} rounds")
        else:
            by_method = group.set_index("method")

            def value(method: str, col: str) -> float:
                return by_method.at[method, col] if method in by_method.index else math.nan

            row.update({
                "meltr_vs_finetune": _ratio(value("meltr", "samples_per_s"), value("finetune", "samples_per_s")),
                "meltr_vs_multitask": _ratio(value("meltr", "samples_per_s"), value("multitask", "samples_per_s")),
                "mem_meltr_vs_finetune": _ratio(value("meltr", "peak_mem_mb"), value("finetune", "peak_mem_mb")),
                "mem_meltr_vs_multitask": _ratio(value("meltr", "peak_mem_mb"), value("multitask", "peak_mem_mb")),
                "meltr_vs_finetune_iqr": math.nan, "meltr_vs_multitask_iqr": math.nan,
                "meltr_vs_finetune_usable": False, "meltr_vs_multitask_usable": False,
                "source": "separate training jobs"})
        out.append(row)
    return pd.DataFrame(out, columns=GROUP + RATIO_COLS + SPREAD_COLS + ["source"])


# ---------------------------------------------------------------------------------------------------------
# Machine-readable outputs


def _json_value(value: Any) -> Any:
    """NaN is not valid JSON (and DVC rejects it): write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def dvc_metrics(df: pd.DataFrame) -> dict:
    """{dataset: {task: {model: {method: {metric, score, samples_per_s, step_ms, peak_mem_mb}}}}}."""
    nested: dict = {}
    for row in rounded(df).to_dict("records"):
        leaf = nested.setdefault(row["dataset"], {}).setdefault(row["task"], {}).setdefault(row["model"], {})
        keys = DVC_KEYS + (RETRIEVAL_DVC_KEYS if row["family"] == "retrieval" else ())
        leaf[row["method"]] = {k: _json_value(row[k]) for k in keys}
    return nested


# ---------------------------------------------------------------------------------------------------------
# Plots. A bare Figure with the Agg canvas: no pyplot global state, no display needed, safe under Snakemake.


_MARKERS = {"finetune": "o", "multitask": "s", "meltr": "^"}
_COLOURS = {"finetune": "tab:blue", "multitask": "tab:orange", "meltr": "tab:green"}


def _method_style(method: str, i: int) -> tuple[str, str]:
    extra_markers, extra_colours = "DvP*X", ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    return (_MARKERS.get(method, extra_markers[i % len(extra_markers)]),
            _COLOURS.get(method, extra_colours[i % len(extra_colours)]))


def plot_quality_vs_throughput(df: pd.DataFrame, path: Path) -> None:
    """Each task's headline score against samples/s, one panel per (dataset, task)."""
    panels = list(df.groupby(["dataset", "task"], sort=True))
    fig, axes = new_figure(len(panels))
    methods = sorted(df["method"].unique(), key=_method_rank)
    for ax, ((dataset, task), group) in zip(axes, panels):
        for i, method in enumerate(methods):
            sub = group[group["method"] == method]
            if sub.empty:
                continue
            marker, colour = _method_style(method, i)
            ax.scatter(sub["samples_per_s"], sub["score"], marker=marker, color=colour, s=60,
                       label=METHOD_LABEL.get(method, method), zorder=3)
            for _, r in sub.iterrows():
                ax.annotate(r["model"], (r["samples_per_s"], r["score"]), textcoords="offset points",
                            xytext=(5, 5), fontsize=8)
        family = group.iloc[0]["family"]
        for level in sorted(group["baseline"].dropna().unique()):
            ax.axhline(level, linestyle="--", color="gray", linewidth=1,
                       label=f"{HEADLINE[family][1]} ({level:.2f})")
        sps = group["samples_per_s"]
        if (sps > 0).all() and sps.max() / sps.min() > 20:  # model sizes span decades of throughput
            ax.set_xscale("log")
        ax.set_xlabel("training throughput (samples/s)")
        ax.set_ylabel(HEADLINE[family][0])
        ax.set_ylim(bottom=0)  # a zero baseline keeps gaps in proportion
        ax.set_title(f"{dataset} {task}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    save_png(fig, path)


def _weights_series(log_path: Path) -> dict[str, tuple[list, list]]:
    """{loss name: (steps, weights)} from a train_log.jsonl."""
    series: dict[str, tuple[list, list]] = {}
    for i, rec in enumerate(read_jsonl(log_path), 1):
        where = f"{log_path}:{i}"
        if "step" not in rec:
            raise MeltrError(f"{where}: missing key 'step'")
        weights = rec.get("weights")
        if not isinstance(weights, dict):
            raise MeltrError(f"{where}: missing key 'weights' (expected an object of per-loss weights)")
        for name, w in weights.items():
            if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float))):
                raise MeltrError(f"{where}: key 'weights.{name}' expected a number, got {w!r}")
            steps, values = series.setdefault(name, ([], []))
            steps.append(rec["step"])
            values.append(math.nan if w is None else float(w))
    if not series:
        raise MeltrError(f"{log_path}: expected at least one training step with 'weights', got none")
    return series


def load_meltr_weights(meltr_runs: pd.DataFrame) -> list[tuple[str, dict[str, tuple[list, list]]]]:
    """(panel title, {loss: (steps, weights)}) for each MELTR run, from its train_log.jsonl."""
    return [(f"MELTR weights: {r['dataset']} {r['task']} {r['model']}",
             _weights_series(Path(r["run_dir"]) / "train_log.jsonl")) for _, r in meltr_runs.iterrows()]


def plot_meltr_weights(panels: list[tuple[str, dict[str, tuple[list, list]]]], path: Path) -> None:
    """MELTR's effective per-loss weights dL_total/dL_m over steps, one panel per MELTR run."""
    fig, axes = new_figure(len(panels))
    for ax, (title, series) in zip(axes, panels):
        for name in sorted(series):
            steps, values = series[name]
            ax.plot(steps, values, label=name, linewidth=1.2)
        ax.axhline(1.0, linestyle=":", color="gray", linewidth=1)  # the multi-task weight, for reference
        ax.set_xlabel("training step")
        ax.set_ylabel("effective weight dL_total / dL_m")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    save_png(fig, path)


# ---------------------------------------------------------------------------------------------------------
# Markdown


# (header, column, decimals) of the report's tables: each family's quality columns, then the cost columns
_COST_COLS = [
    ("params (M)", "params_m", 2), ("samples/s", "samples_per_s", 2), ("step ms", "step_ms", 2),
    ("peak MB", "peak_mem_mb", 1), ("meta-step ms", "meta_step_ms", 2),
]
# Per family: (title, quality columns)
_FAMILY_TABLES = {
    "retrieval": ("Text-to-video retrieval (percent; MedR is a rank, lower is better; p: the exact binomial "
                  "probability of at least this t2v R@1 with random scores)",
                  [("t2v R@1", "R1", 2), ("t2v R@5", "R5", 2), ("t2v R@10", "R10", 2), ("t2v MedR", "MedR", 1),
                   ("v2t R@1", "v2t_R1", 2), ("chance R@1", "chance_R1", 2), ("p", "chance_p", None)]),
    "captioning": ("Captioning (pycocoevalcap scorers as nlg-eval calls them; fractions)",
                   [("BLEU-4", "BLEU4", 4), ("METEOR", "METEOR", 4), ("ROUGE-L", "ROUGE_L", 4),
                    ("CIDEr", "CIDEr", 4), ("CIDEr greedy", "CIDEr_greedy", 4)]),
    "multiple_choice": ("Multiple-choice QA (accuracy %, 5 options; p: the exact binomial probability of at least "
                        "this accuracy by guessing)",
                        [("accuracy", "score", 2), ("chance", "baseline", 2), ("p", "chance_p", None)]),
    "open_ended": ("Open-ended QA (accuracy %, over the training answers)",
                   [("accuracy", "score", 2), ("most frequent answer", "baseline", 2)]),
    "count": ("Count (MSE after rounding and clipping to [1, 10]; lower is better)",
              [("MSE", "score", 3), ("constant training mean", "baseline", 3)]),
}


def _summary_table(df: pd.DataFrame, cols: list[tuple[str, str, int]]) -> str:
    headers = ["dataset", "task", "model", "method"] + [h for h, _, _ in cols]
    rows = [[r[k] for k in ("dataset", "task", "model")] + [METHOD_LABEL.get(r["method"], r["method"])]
            + [fmt(r[c], d) for _, c, d in cols] for _, r in df.iterrows()]
    return md_table(headers, rows)


def _family_tables(df: pd.DataFrame) -> str:
    parts = []
    for family, (title, cols) in _FAMILY_TABLES.items():
        sub = df[df["family"] == family]
        if not sub.empty:
            parts.append(f"### {title}\n\n" + _summary_table(sub, cols + _COST_COLS))
    return "\n\n".join(parts)


def _ratio_table(ratios: pd.DataFrame) -> str:
    def x(v: float) -> str:
        return "–" if pd.isna(v) else f"{v:.2f}×"

    def speed(r, base: str) -> str:
        """median (IQR over rounds); a ratio whose spread says nothing is struck through and flagged."""
        v, iqr, usable = r[f"meltr_vs_{base}"], r[f"meltr_vs_{base}_iqr"], r[f"meltr_vs_{base}_usable"]
        if pd.isna(v):
            return "–"
        text = f"{v:.2f}×" + ("" if pd.isna(iqr) else f" (IQR {iqr:.2f})")
        return text if usable else f"~~{text}~~ unusable"

    headers = ["dataset", "task", "model", "MELTR / fine-tune samples/s", "MELTR / multi-task samples/s",
               "MELTR / fine-tune peak mem", "MELTR / multi-task peak mem", "measured by"]
    rows = [[r["dataset"], r["task"], r["model"], speed(r, "finetune"), speed(r, "multitask"),
             x(r["mem_meltr_vs_finetune"]), x(r["mem_meltr_vs_multitask"]), r["source"]]
            for _, r in ratios.iterrows()]
    return md_table(headers, rows)


def _group_sentence(group: pd.DataFrame, ratio: pd.Series) -> str:
    """One sentence per (dataset, task, model), built only from the numbers present."""
    dataset, task, model = (group.iloc[0][k] for k in GROUP)
    by_method = group.set_index("method")
    if "meltr" not in by_method.index:
        return f"On {dataset} {task} with the {model} model there is no MELTR run to compare."
    # A ratio whose spread over rounds makes it meaningless is not stated as a finding (bench/runner.py).
    speed = [f"{ratio[col]:.2f}× the throughput of {name}"
             for col, name in (("meltr_vs_multitask", "multi-task fine-tuning"),
                               ("meltr_vs_finetune", "standard fine-tuning"))
             if not pd.isna(ratio[col]) and ratio[f"{col}_usable"]]
    text = f"On {dataset} {task} with the {model} model, MELTR ran at " + (
        " and ".join(speed) if speed else "a fraction of the baselines' throughput that this run could not measure "
        "reliably (no baseline, or too much spread between rounds: see the ratio table)")
    quality = [f"{by_method.at[m, 'score']:.2f} ({METHOD_LABEL[m]})" for m in ("multitask", "finetune")
               if m in by_method.index]
    meltr = by_method.loc["meltr"]
    name, base = HEADLINE[meltr["family"]]
    text += f"; its {name} was {meltr['score']:.2f}"
    if quality:
        text += " vs " + " and ".join(quality)
    if base and not pd.isna(meltr["baseline"]):
        text += f" ({base} {meltr['baseline']:.2f}"
        if meltr["family"] in ("retrieval", "multiple_choice", "open_ended"):
            # Tiny test sets make percentages coarse: say what one item is worth.
            text += f"; one of the {meltr['n_test']} test items moves it by {100.0 / meltr['n_test']:.2f} points"
        text += ")"
    text += "."
    if not pd.isna(ratio["mem_meltr_vs_multitask"]):
        text += f" Its peak memory was {ratio['mem_meltr_vs_multitask']:.2f}× that of multi-task fine-tuning."
    return text


def _family_sentences(ratios: pd.DataFrame) -> list[str]:
    """Per model family: the range over its tasks of MELTR's usable cost ratios, the answer in one sentence."""
    out = []
    families = ratios["model"].map(lambda m: PRESETS[m].family if m in PRESETS else "other")
    for family, rows in ratios.groupby(families, sort=True):
        parts = []
        for base, name in (("finetune", "standard fine-tuning"), ("multitask", "multi-task fine-tuning")):
            usable = rows[rows[f"meltr_vs_{base}_usable"].fillna(False).astype(bool)][f"meltr_vs_{base}"].dropna()
            if len(usable):
                parts.append(f"{usable.min():.2f}–{usable.max():.2f}× the throughput of {name} "
                             f"({len(usable)} of {len(rows)} tasks measured reliably)")
        models = ", ".join(sorted(rows["model"].unique()))
        if parts:
            out.append(f"On the {FAMILY_LABELS.get(family, family)} ({models}), MELTR ran at " + " and ".join(parts) + ".")
        else:
            out.append(f"On the {FAMILY_LABELS.get(family, family)} ({models}) no cost ratio of this run was measured "
                       "reliably (see the ratio table).")
    return out


def _summary_paragraph(df: pd.DataFrame, ratios: pd.DataFrame) -> str:
    ratio_by_group = ratios.set_index(GROUP)
    sentences = _family_sentences(ratios) if len(ratios) else []
    sentences += [_group_sentence(group, ratio_by_group.loc[key]) for key, group in df.groupby(GROUP, sort=True)]
    return " ".join(sentences)


def _measured_section(df: pd.DataFrame, ratios: pd.DataFrame) -> str:
    devices = sorted(df["device"].dropna().unique())
    timed = sorted({int(v) for v in df["steps_timed"].dropna()})
    batches = sorted({int(v) for v in df["batch_size"].dropna()})
    meltr_rows = df[df["method"] == "meltr"]
    sampling = {"current": "the step's own batch", "replay": "replayed batches"}
    estimators = sorted({f"{e} on {sampling.get(b, b)}" if isinstance(b, str) else str(e)
                         for e, b in zip(meltr_rows["estimator"], meltr_rows["meta_batches"])
                         if isinstance(e, str)})
    lines = [
        "## How this was measured",
        "",
        "- Step time is the **median** wall-clock time of a training step after warm-up steps are skipped"
        + (f" ({', '.join(map(str, timed))} timed steps)" if timed else "")
        + "; samples/s = samples trained over the timed window / the window's total time, meta steps "
        "included (the window is a multiple of MELTR's meta interval k)"
        + (f"; batch size {', '.join(map(str, batches))}" if batches else "") + ".",
        f"- Device, as named in throughput.json: {', '.join(devices) if devices else 'not recorded'}.",
        "- The cost ratios come from each task's cost job (`meltr bench cost`): every method on the task's own "
        "model and training batches, timed interleaved in one process (warm-up excluded, one window of k steps "
        "per method per round, the order rotated between rounds), as the median over rounds of the per-round "
        "ratio with its IQR. A ratio whose IQR exceeds a fifth of it, or with fewer than 3 rounds, is struck "
        "through as unusable instead of being stated; so is any ratio taken from separate training jobs.",
        "- Peak MB is `peak_mem_mb` from throughput.json, with the one meaning of `meltr/train/memory.py`: what "
        "the method holds at its peak over the timed steps (weights, gradients, optimiser state, MELTR and the "
        "steps' transient buffers; on CPU its tensors plus the sampled rise of the resident set); meta-step ms "
        "is the median time of MELTR's meta step over the timed steps (– for methods without one).",
        "- Retrieval metrics follow CLIP4Clip's protocol with tie-safe ranks; chance R@1 = 100 / n_test. "
        "Captioning: BLEU-1..4, METEOR, ROUGE-L, CIDEr from pycocoevalcap's scorers without the PTB tokenizer "
        "(as nlg-eval), against every reference. QA: accuracy over all questions of the evaluation split; "
        "FrameQA answers outside the training answers "
        + ("count as wrong (strict)" if "exclude" not in set(df["out_of_vocabulary"].dropna())
           else "are excluded from the denominator (All-in-one)") + ". Count: MSE after rounding and clipping to [1, 10].",
    ]
    if estimators:
        lines.append(f"- MELTR's variant (hypergradient estimator, meta batches): {', '.join(estimators)}.")
    skipped = sorted({v for vs in df["skipped_videos"].dropna() for v in str(vs).split(";") if v})
    lines.append(f"- Broken videos skipped (`features.on_bad_video: skip`): {len(skipped)}"
                 + (": " + ", ".join(f"`{v}`" for v in skipped[:20]) + (" ..." if len(skipped) > 20 else "")
                    if skipped else "."))
    mixed = [k for k, g in df.groupby(GROUP, sort=True) if g["device"].nunique() > 1]
    if mixed:
        lines.append(f"- **Warning:** runs in {', '.join('/'.join(k) for k in mixed)} were measured on "
                     "different devices; their ratios mix hardware.")
    return "\n".join(lines)


def report_markdown(df: pd.DataFrame, ratios: pd.DataFrame, has_weights: bool) -> str:
    weights = ("![MELTR's effective per-loss weights over training](meltr_weights.png)" if has_weights
               else "No MELTR run was given, so there is no plot of MELTR's loss weights.")
    return "\n\n".join([
        "# MELTR: quality and training cost",
        _summary_paragraph(df, ratios),
        "## Results\n\n" + _family_tables(df),
        "## Throughput and memory ratios\n\nBelow 1× on samples/s means MELTR is slower; above 1× on memory "
        "means it needs more.\n\n" + _ratio_table(ratios),
        "## Plots\n\n![Each task's headline metric against training throughput](quality_vs_throughput.png)\n\n"
        + weights,
        _measured_section(df, ratios),
    ]) + "\n"


