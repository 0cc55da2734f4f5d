"""The scaling part of the report: MELTR's cost against finetune and multitask as the model grows.

Reads `meltr bench scaling` JSON files (the default run's CPU sweep, GPU sweeps committed under
results/scaling/<card>/), and writes: one CSV of every point (DVC plots), one CSV of the fitted slopes,
log-log plots of samples/s and peak memory against parameters per method, the ratios meltr/finetune and
meltr/multitask against parameters, and a markdown section with the answer built from the numbers.

Slopes are least-squares fits in log10(parameters): for samples/s and memory the log-log exponent, for a
ratio its change per decade of parameters (a flat ratio has slope 0).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MeltrError
from ..models.presets import FAMILY_LABELS
from .render import md_table, new_figure, save_png, write_csv

REQUIRED = ("device", "precision", "points")
HEADLINE_K = 3  # MELTR's k in the papers (UniVL, Violet)
# A GPU cell whose finetune MFU stays under this is launch-bound: its ratios are not the answer (the points
# table marks such points too).
LAUNCH_BOUND = 0.10
DEFAULT_METHOD = "meltr/finite_difference@current"
OFFICIAL_METHOD = "meltr/double_backward"


def load_points(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """All points of all sweeps, one row each, with the sweep's device and precision."""
    rows = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MeltrError(f"{path}: expected a `meltr bench scaling` JSON file ({exc})") from None
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise MeltrError(f"{path}: missing key {missing[0]!r} (expected a `meltr bench scaling` JSON file)")
        for i, p in enumerate(data["points"]):
            for key in ("size", "params", "method", "batch_size", "adapters"):
                if key not in p:
                    raise MeltrError(f"{path}: points[{i}]: missing key {key!r}")
            # Sweeps from before the one runner timed the methods one after another, and took MFU against a
            # matmul measured in the run: say so wherever their numbers appear.
            protocol = "interleaved" if data.get("interleaved") else "sequential (the earlier protocol)"
            rows.append({"device": data["device"], "precision": data["precision"], "source": str(path),
                         "protocol": protocol, "mfu_peak": data.get("peak_flops_source"),
                         "model_family": "univl", **p})  # sweeps from before the VideoLLM family: UniVL
    df = pd.DataFrame(rows)
    for col in ("k", "samples_per_s", "peak_mem_mb", "ratio_vs_finetune", "ratio_vs_multitask", "mfu", "oom",
                "skipped", "failed", "step_ms", "step_ms_iqr", "meta_step_ms", "mem_ratio_vs_multitask"):
        if col not in df:
            df[col] = None
    df["status"] = np.where(df["skipped"].notna(), "skipped",
                            np.where(df["oom"] == True, "out of memory",  # noqa: E712 (object column)
                                     np.where(df["failed"].notna(), "failed", "ok")))
    df["params_m"] = df["params"] / 1e6
    return df


def _fit(x: pd.Series, y: pd.Series, log_y: bool) -> tuple[float, int]:
    """Least-squares slope of y (or log10 y) against log10 x; (nan, n) below 2 distinct sizes."""
    ok = x.notna() & y.notna() & (x > 0) & ((y > 0) if log_y else True)
    x, y = np.log10(x[ok].astype(float)), y[ok].astype(float)
    if x.nunique() < 2:
        return math.nan, int(ok.sum())
    return float(np.polyfit(x, np.log10(y) if log_y else y, 1)[0]), int(ok.sum())


# A cell of the sweep: the ratios and fits of different model families, devices or settings never mix.
CELL = ["model_family", "device", "precision", "batch_size", "adapters"]


def _cells(df: pd.DataFrame):
    return df.groupby(CELL, sort=False)


def _in_cell(table: pd.DataFrame, keys: tuple) -> pd.Series:
    """Rows of a slopes/fits table that belong to the cell `keys` (family, device, precision, batch, adapters)."""
    mask = pd.Series(True, index=table.index)
    for col, value in zip(CELL, keys):
        if col != "precision":
            mask &= table[col] == value
    return mask


def slopes(df: pd.DataFrame) -> pd.DataFrame:
    """Per device, batch, adapters, method and k: fitted slopes of samples/s, memory and the two ratios."""
    ok = df[df["status"] == "ok"]
    out = []
    for keys, cell in _cells(ok):
        for (method, k), g in cell.groupby(["method", cell["k"].fillna(0)], sort=False):
            row = dict(zip(CELL, keys))
            row.update(method=method, k=int(k) or None, sizes=int(g["size"].nunique()),
                       params_min_m=float(g["params_m"].min()), params_max_m=float(g["params_m"].max()))
            row["samples_per_s_exponent"] = _fit(g["params"], g["samples_per_s"], log_y=True)[0]
            row["peak_mem_exponent"] = _fit(g["params"], g["peak_mem_mb"], log_y=True)[0]
            for b in ("finetune", "multitask"):
                col = f"ratio_vs_{b}"
                row[f"{col}_per_decade"] = _fit(g["params"], g[col], log_y=False)[0] if g[col].notna().any() \
                    else math.nan
                vals = g[col].dropna()
                row[f"{col}_min"] = float(vals.min()) if len(vals) else math.nan
                row[f"{col}_max"] = float(vals.max()) if len(vals) else math.nan
            out.append(row)
    return pd.DataFrame(out)


def largest_fit(df: pd.DataFrame, budgets_gb: list[float]) -> pd.DataFrame:
    """Per device and method: the largest size measured without running out of memory, and for each
    budget the largest parameter count whose peak memory fits it, by a linear fit of peak memory against
    parameters over the measured sizes (an extrapolation beyond the largest measured size)."""
    out = []
    for keys, cell in _cells(df[df["status"].isin(["ok", "out of memory"])]):
        for method, g in cell.groupby("method", sort=False):
            ok = g[g["status"] == "ok"].drop_duplicates("size")
            oom = g[g["status"] == "out of memory"]
            row = dict(zip(CELL, keys))
            row["method"] = method
            row["largest_measured"] = ok.loc[ok["params"].idxmax(), "size"] if len(ok) else None
            row["smallest_out_of_memory"] = oom.loc[oom["params"].idxmin(), "size"] if len(oom) else None
            if ok["params"].nunique() >= 2:
                a, b = np.polyfit(ok["params"].astype(float), ok["peak_mem_mb"].astype(float), 1)
                for gb in budgets_gb:
                    row[f"fits_{gb:g}GB_params_b"] = max(0.0, (gb * 1024 - b) / a / 1e9) if a > 0 else math.nan
            out.append(row)
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------- plots
def _plot_cells(df: pd.DataFrame, path: Path, y: str, ylabel: str, log_y: bool, k: int,
                methods: list[str] | None = None) -> None:

    ok = df[(df["status"] == "ok")]
    cells = list(_cells(ok))
    fig, axes = new_figure(max(1, len(cells)), width=5.5, height=4.2)
    for ax, (keys, cell) in zip(axes, cells):
        sub = cell[(cell["k"].isna()) | (cell["k"] == k)]
        for method, g in sub.groupby("method", sort=False):
            if methods is not None and method not in methods or g[y].isna().all():
                continue
            g = g.sort_values("params")
            ax.plot(g["params"], g[y], marker="o", label=method)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        family, device, precision, batch, adapters = keys
        ax.set_title(f"{FAMILY_LABELS.get(family, family)}, {device}\n{precision}, batch {batch}, adapters "
                     f"{adapters}, MELTR k={k}", fontsize=9)
        ax.set_xlabel("parameters")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    save_png(fig, path)


def write_plots(df: pd.DataFrame, report_dir: Path) -> dict[str, str]:
    plots = {"scaling_throughput.png": ("samples_per_s", "samples/s (global)", True),
             "scaling_memory.png": ("peak_mem_mb", "peak memory (MiB)", True),
             "scaling_ratio_multitask.png": ("ratio_vs_multitask", "samples/s meltr / multitask", False),
             "scaling_ratio_finetune.png": ("ratio_vs_finetune", "samples/s meltr / finetune", False)}
    for name, (y, label, log_y) in plots.items():
        _plot_cells(df, report_dir / name, y, label, log_y, HEADLINE_K)
    return {name: label for name, (_, label, _) in plots.items()}


# ---------------------------------------------------------------------------------------------- markdown
def _f(v, digits=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _answer(df: pd.DataFrame, fits: pd.DataFrame, slope: pd.DataFrame) -> str:
    """A few sentences from the numbers: per family and device, the default and the official estimator at k=3."""
    lines = []
    for keys, cell in _cells(df):
        family, device, precision, batch, adapters = keys
        if adapters != "none":
            continue
        sl = slope[_in_cell(slope, keys)] if len(slope) else slope
        parts = []
        for method in (DEFAULT_METHOD, OFFICIAL_METHOD):
            s = sl[(sl["method"] == method) & (sl["k"] == HEADLINE_K)]
            if s.empty:
                continue
            s = s.iloc[0]
            f = fits[_in_cell(fits, keys) & (fits["method"] == method)]
            limit = ""
            if not f.empty and pd.notna(f.iloc[0]["smallest_out_of_memory"]):
                limit = f"; out of memory from `{f.iloc[0]['smallest_out_of_memory']}` on"
            parts.append(f"`{method}` keeps {_f(s['ratio_vs_multitask_min'])}–{_f(s['ratio_vs_multitask_max'])} of "
                         f"multitask's samples/s ({_f(s['ratio_vs_finetune_min'])}–{_f(s['ratio_vs_finetune_max'])} "
                         f"of finetune's) from {_f(s['params_min_m'], 1)}M to {_f(s['params_max_m'], 1)}M parameters, "
                         f"a change of {_f(s['ratio_vs_multitask_per_decade'], 3)} per decade{limit}")
        base = fits[_in_cell(fits, keys) & (fits["method"] == "multitask")] if len(fits) else fits
        if not base.empty and pd.notna(base.iloc[0]["smallest_out_of_memory"]):
            parts.append(f"multitask itself runs out of memory from `{base.iloc[0]['smallest_out_of_memory']}` on")
        if parts:
            protocol = ", ".join(sorted(set(cell["protocol"])))
            mfu = cell[(cell["method"] == "finetune") & (cell["status"] == "ok")]["mfu"].dropna()
            bound = ""
            if len(mfu) and not str(device).startswith("cpu") and float(mfu.max()) < LAUNCH_BOUND:
                bound = (f" Finetune reached at most {100 * float(mfu.max()):.1f} % MFU here: launch-bound, so "
                         "these ratios describe kernel launches and host work, not the arithmetic of training.")
            lines.append(f"- **{FAMILY_LABELS.get(family, family)}, {device}** ({precision}, batch {batch}, "
                         f"k={HEADLINE_K}; methods timed {protocol}): " + "; ".join(parts) + "." + bound)
    return "\n".join(lines) or "No sweep measured MELTR and both baselines at k=3."


def _points_table(cell: pd.DataFrame) -> str:

    headers = ["size", "params (M)", "method", "k", "samples/s", "step ms (IQR)", "meta ms", "peak MiB",
               "GFLOP/step", "MFU %", "/finetune", "/multitask", "mem/multitask", "attention"]
    rows = []
    for _, r in cell.sort_values(["params"], kind="stable").iterrows():
        k = r["k"]
        if r["status"] == "ok" and not (pd.isna(k) or k == HEADLINE_K):
            continue
        if r["status"] != "ok":
            what = {"out of memory": f"out of memory ({r.get('oom_stage')})", "skipped": f"skipped ({r['skipped']})",
                    "failed": f"failed ({r.get('error')})"}[r["status"]]
            rows.append([r["size"], _f(r["params_m"], 1), r["method"], "", what] + [""] * 9)
            continue
        kernel = "/".join(r["attention_kernel"]) if isinstance(r.get("attention_kernel"), list) else ""
        if isinstance(r.get("meta_attention_kernel"), list):
            kernel += f"; meta {'/'.join(r['meta_attention_kernel'])}"
        rows.append([r["size"], _f(r["params_m"], 1), r["method"], "" if pd.isna(k) else str(int(k)),
                     _f(r["samples_per_s"], 1), f"{_f(r['step_ms'], 1)} ({_f(r['step_ms_iqr'], 1)})",
                     _f(r["meta_step_ms"], 1), _f(r["peak_mem_mb"], 0),
                     _f(r["flops_per_step"] / 1e9 if r.get("flops_per_step") is not None
                        and not pd.isna(r.get("flops_per_step")) else None, 1),
                     _mfu(r),
                     _f(r["ratio_vs_finetune"]), _f(r["ratio_vs_multitask"]), _f(r["mem_ratio_vs_multitask"]),
                     kernel])
    return md_table(headers, rows)


def _mfu(r) -> str:
    """MFU in %, marked launch-bound (†) for a GPU point under LAUNCH_BOUND."""
    if r.get("mfu") is None or pd.isna(r["mfu"]):
        return "–"
    bound = not str(r["device"]).startswith("cpu") and r["mfu"] < LAUNCH_BOUND
    return f"{100 * r['mfu']:.1f}" + (" †" if bound else "")


def _slopes_table(slope: pd.DataFrame) -> str:

    headers = ["device", "batch", "adapters", "method", "k", "sizes", "samples/s exponent", "memory exponent",
               "meltr/multitask per decade", "meltr/finetune per decade"]
    rows = [[r["device"], str(r["batch_size"]), r["adapters"], r["method"], "" if pd.isna(r["k"]) else str(int(r["k"])),
             str(r["sizes"]), _f(r["samples_per_s_exponent"], 3), _f(r["peak_mem_exponent"], 3),
             _f(r["ratio_vs_multitask_per_decade"], 3), _f(r["ratio_vs_finetune_per_decade"], 3)]
            for _, r in slope.iterrows() if r["sizes"] >= 2]
    return md_table(headers, rows)


def _fits_table(fits: pd.DataFrame, budgets_gb: list[float]) -> str:

    headers = ["family", "device", "batch", "adapters", "method", "largest measured", "smallest out of memory"] + \
        [f"fits {gb:g} GB (B params, fitted)" for gb in budgets_gb]
    rows = [[FAMILY_LABELS.get(r["model_family"], r["model_family"]), r["device"], str(r["batch_size"]), r["adapters"], r["method"], _f(r["largest_measured"]),
             _f(r["smallest_out_of_memory"])] + [_f(r.get(f"fits_{gb:g}GB_params_b"), 2) for gb in budgets_gb]
            for _, r in fits.iterrows()]
    return md_table(headers, rows)


def scaling_section(df: pd.DataFrame, slope: pd.DataFrame, fits: pd.DataFrame, budgets_gb: list[float],
                    plots: dict[str, str]) -> str:
    parts = ["## Scaling: MELTR's cost as the model grows",
             "`meltr bench scaling` trains every size with each method on the same synthetic batches and "
             "records samples/s, step time, peak memory, FLOPs and MFU (see `meltr/bench/scaling.py` for the "
             "protocol). Ratios are MELTR's samples/s over a baseline's in the same sweep; per decade is the "
             "fitted change of the ratio per 10x parameters; exponents are log-log slopes.",
             "### The answer in numbers\n\n" + _answer(df, fits, slope)]
    for (family, device, precision, batch, adapters), cell in _cells(df):
        sources = ", ".join(sorted({Path(s).name for s in cell["source"]}))
        protocol = ", ".join(sorted(set(cell["protocol"])))
        peaks = ", ".join(sorted({str(x) for x in cell["mfu_peak"].dropna()})) or "not recorded"
        parts.append(f"### {FAMILY_LABELS.get(family, family)}, {device}: {precision}, batch {batch}, adapters "
                     f"{adapters} (from {sources})\n\n"
                     f"Methods timed: {protocol}. MFU against: {peaks}. Baselines and MELTR at k={HEADLINE_K}; "
                     f"every k is in `scaling.csv`. †: MFU under {100 * LAUNCH_BOUND:.0f} % on a GPU, launch-bound "
                     "(kernel launches and host work set the step time), not the answer.\n\n" + _points_table(cell))
    parts.append("### Fitted slopes\n\n" + _slopes_table(slope))
    parts.append("### Largest size that fits\n\nMeasured sizes, and for each memory budget the parameter count "
                 "at which the linear fit of peak memory against parameters reaches it (an extrapolation).\n\n"
                 + _fits_table(fits, budgets_gb))
    parts.append("### Plots\n\n" + "\n\n".join(f"![{label} against parameters]({name})" for name, label in plots.items()))
    return "\n\n".join(parts)


def build_scaling(df: pd.DataFrame, report_dir: str | os.PathLike, points_csv: str | os.PathLike,
                  slopes_csv: str | os.PathLike, budgets_gb: list[float]) -> str:
    """Write the CSVs and plots of `load_points`' table; return the markdown section for report.md."""

    slope = slopes(df)
    fits = largest_fit(df, budgets_gb)
    report_dir = Path(report_dir)
    plots = write_plots(df, report_dir)
    cols = [c for c in df.columns if c not in ("attention_kernel", "meta_attention_kernel", "config")]
    flat = df[cols].copy()
    flat["attention_kernel"] = df["attention_kernel"].map(lambda v: "/".join(v) if isinstance(v, list) else v) \
        if "attention_kernel" in df else None
    write_csv(points_csv, flat)
    write_csv(slopes_csv, slope)
    return scaling_section(df, slope, fits, budgets_gb, plots)
