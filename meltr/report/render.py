"""How the report writes what it shows: rounded csv files, Markdown tables and numbers, PNG figures.

Figures are bare matplotlib Figures on the Agg canvas: no pyplot global state, no display, safe under Snakemake.
Every file is written to a temporary name and renamed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_path

# Decimals of the output columns in csv files and metrics JSON.
ROUND = {
    "params_m": 3, "R1": 2, "R5": 2, "R10": 2, "MedR": 1, "MeanR": 2,
    "v2t_R1": 2, "v2t_R5": 2, "v2t_R10": 2, "v2t_MedR": 1,
    "samples_per_s": 2, "step_ms": 2, "peak_mem_mb": 1, "meta_step_ms": 2,
    "chance_R1": 3, "step_ms_iqr": 2, "score": 3, "baseline": 3,
    "BLEU4": 4, "METEOR": 4, "ROUGE_L": 4, "CIDEr": 4, "CIDEr_greedy": 4,
}

def rounded(df: pd.DataFrame) -> pd.DataFrame:
    return df.round({k: v for k, v in ROUND.items() if k in df.columns})


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        rounded(df).to_csv(tmp, index=False)


def new_figure(n_panels: int, width: float = 5.0, height: float = 4.0) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def save_png(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def fmt(value: Any, digits: int | None = 2) -> str:
    """digits None: two significant digits (probabilities, which span many decades)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.2g}" if digits is None else f"{value:.{digits}f}"
    return str(value)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


