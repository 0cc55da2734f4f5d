"""`meltr report`: the finished runs and the scaling sweeps -> summary.csv, metrics.json, report.md and plots."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import MeltrError
from ..io import write_json, write_text
from .render import write_csv
from .runs import (collect_runs, dvc_metrics, load_costs, load_meltr_weights, plot_meltr_weights, plot_quality_vs_throughput,
                   report_markdown, throughput_ratios)
from .scaling import build_scaling, load_points


def build_report(run_dirs: Iterable[str | os.PathLike], summary_csv: str | os.PathLike,
                 report_dir: str | os.PathLike, metrics_json: str | os.PathLike,
                 scaling: list[str | os.PathLike] | None = None, scaling_csv: str | os.PathLike | None = None,
                 slopes_csv: str | os.PathLike | None = None, memory_budgets_gb: list[float] = (24, 80, 141),
                 costs: list[str | os.PathLike] | None = None) -> None:
    """Write summary_csv, metrics_json (nested for DVC), and report.md + PNG plots in report_dir; with
    `scaling` (`meltr bench scaling` JSON files) also the scaling section, its CSVs and plots.

    Every file is written atomically. Everything is read and checked before the first file is written,
    so bad input leaves the previous outputs untouched.
    """
    df = collect_runs(run_dirs)
    ratios = throughput_ratios(df, load_costs(costs) if costs else None)
    # Read the MELTR train logs before writing anything, so a bad log leaves old outputs in place.
    weight_panels = load_meltr_weights(df[df["method"] == "meltr"])
    report_md = report_markdown(df, ratios, has_weights=bool(weight_panels))
    report_dir = Path(report_dir)
    scaling_points = None
    if scaling:
        if not (scaling_csv and slopes_csv):
            raise MeltrError("report: --scaling needs --scaling-csv and --slopes-csv")
        scaling_points = load_points(scaling)

    write_csv(summary_csv, df)
    write_json(metrics_json, dvc_metrics(df))
    plot_quality_vs_throughput(df, report_dir / "quality_vs_throughput.png")
    weights_png = report_dir / "meltr_weights.png"
    if weight_panels:
        plot_meltr_weights(weight_panels, weights_png)
    else:
        weights_png.unlink(missing_ok=True)  # a plot left from an earlier report would contradict report.md
    if scaling_points is not None:
        report_md += "\n" + build_scaling(scaling_points, report_dir, scaling_csv, slopes_csv,
                                          list(memory_budgets_gb)) + "\n"
    write_text(report_dir / "report.md", report_md)
