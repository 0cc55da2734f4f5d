"""build_report on three fabricated run directories (finetune, multitask, meltr)."""
import json
import math

import pandas as pd
import pytest

from meltr.errors import MeltrError
from meltr.report.build import build_report
from meltr.report.runs import COLUMNS, collect_runs, throughput_ratios

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# method: (t2v R1, samples/s, peak MB, meta-step ms)
RUNS = {
    "finetune": (10.0, 100.0, 200.0, None),
    "multitask": (11.67, 80.0, 250.0, None),
    "meltr": (13.33, 40.0, 400.0, 35.5),
}


def make_run(root, method, model="tiny", dataset="msrvtt", r1=None, sps=None, mem=None, meta=None, steps=20):
    d = root / f"{dataset}-{model}-{method}"
    d.mkdir(parents=True)
    defaults = RUNS.get(method, (5.0, 50.0, 100.0, None))
    r1, sps, mem, meta = (v if v is not None else dv for v, dv in zip((r1, sps, mem, meta), defaults))
    metrics = {
        "dataset": dataset, "task": "retrieval", "method": method, "model": model, "n_test": 60,
        "chance_R1": 1.6667, "chance_p_value": 2.5e-07,
        "t2v": {"R1": r1, "R5": r1 + 20, "R10": r1 + 30, "MedR": 12.5, "MeanR": 18.25},
        "v2t": {"R1": r1 - 1, "R5": r1 + 18, "R10": r1 + 28, "MedR": 14.0, "MeanR": 19.5},
    }
    throughput = {
        "method": method, "model": model, "params": 1_234_567, "params_m": 1.234567,
        "step_ms": 1000.0 * 8 / sps, "step_ms_iqr": 1.5, "samples_per_s": sps, "peak_mem_mb": mem,
        "meta_step_ms": meta, "device": "cpu", "batch_size": 8, "steps_timed": 10,
        "estimator": "neumann" if method == "meltr" else None,
    }
    losses = ["align", "joint", "cmlm"] if method != "finetune" else ["align"]
    with open(d / "train_log.jsonl", "w") as f:
        for step in range(steps):
            if method == "meltr":
                weights = {name: 1.0 + 0.05 * step * (k - 1) for k, name in enumerate(losses)}
            else:
                weights = {name: 1.0 for name in losses}
            f.write(json.dumps({"step": step, "loss": 1.0 / (step + 1), "losses": {n: 0.5 for n in losses},
                                "weights": weights, "step_ms": 100.0, "meta": step % 5 == 0}) + "\n")
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "throughput.json").write_text(json.dumps(throughput))
    return d


@pytest.fixture
def runs(tmp_path):
    # Passed out of order on purpose: the table must come back finetune, multitask, meltr.
    return [make_run(tmp_path / "runs", m) for m in ("meltr", "finetune", "multitask")]


@pytest.fixture
def built(tmp_path, runs):
    out = {"csv": tmp_path / "results" / "summary.csv", "dir": tmp_path / "results" / "report",
           "json": tmp_path / "results" / "metrics.json"}
    build_report(runs, out["csv"], out["dir"], out["json"])
    return out


def test_summary_csv_columns_and_order(built):
    df = pd.read_csv(built["csv"])
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS
    assert list(df["method"]) == ["finetune", "multitask", "meltr"]
    assert list(df["R1"]) == [10.0, 11.67, 13.33]
    assert list(df["v2t_R1"]) == [9.0, 10.67, 12.33]
    assert df.loc[2, "meta_step_ms"] == 35.5 and math.isnan(df.loc[0, "meta_step_ms"])
    assert df.loc[0, "params_m"] == 1.235  # rounded
    assert df.loc[2, "estimator"] == "neumann"
    assert (df["n_test"] == 60).all() and (df["device"] == "cpu").all()
    assert not list(built["csv"].parent.glob(".*.tmp"))  # no temp files left behind


def test_throughput_ratios(runs):
    ratios = throughput_ratios(collect_runs(runs))
    assert len(ratios) == 1
    r = ratios.iloc[0]
    assert (r["dataset"], r["task"], r["model"]) == ("msrvtt", "retrieval", "tiny")
    assert r["meltr_vs_finetune"] == pytest.approx(0.4)
    assert r["meltr_vs_multitask"] == pytest.approx(0.5)
    assert r["mem_meltr_vs_multitask"] == pytest.approx(1.6)
    assert r["mem_meltr_vs_finetune"] == pytest.approx(2.0)


def test_ratio_is_nan_where_method_missing(tmp_path):
    runs = [make_run(tmp_path, "meltr"), make_run(tmp_path, "multitask")]
    r = throughput_ratios(collect_runs(runs)).iloc[0]
    assert math.isnan(r["meltr_vs_finetune"]) and r["meltr_vs_multitask"] == pytest.approx(0.5)


def test_pngs_are_valid(built):
    for name in ("quality_vs_throughput.png", "meltr_weights.png"):
        data = (built["dir"] / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 5_000, name


def test_report_md(built):
    md = (built["dir"] / "report.md").read_text()
    assert md.startswith("# ")
    assert "| dataset | task | model | method | t2v R@1 |" in md
    assert "| msrvtt | retrieval | tiny | MELTR | 13.33 |" in md
    # Without cost jobs the ratios divide separate training jobs: shown struck through, never stated.
    assert "~~0.40×~~ unusable" in md and "~~0.50×~~ unusable" in md and "1.60×" in md
    assert "0.50× the throughput" not in md and "could not measure reliably" in md
    assert "chance 1.67" in md
    assert "| 1.67 | 2.5e-07 |" in md  # chance R@1, then the probability of this R@1 with random scores
    assert "](quality_vs_throughput.png)" in md and "](meltr_weights.png)" in md
    assert "How this was measured" in md and "median" in md and "cpu" in md


def test_metrics_json_nesting(built):
    nested = json.loads(built["json"].read_text())
    assert set(nested) == {"msrvtt"}
    leaf = nested["msrvtt"]["retrieval"]["tiny"]
    assert set(leaf) == {"finetune", "multitask", "meltr"}
    assert set(leaf["meltr"]) == {"score", "R1", "R5", "R10", "MedR", "samples_per_s", "step_ms", "peak_mem_mb"}
    assert leaf["meltr"]["score"] == leaf["meltr"]["R1"]  # retrieval: the headline score is t2v R@1
    assert leaf["meltr"]["R1"] == 13.33 and leaf["finetune"]["samples_per_s"] == 100.0


def test_sort_order_with_models_and_unknown_methods(tmp_path):
    runs = [make_run(tmp_path, m, model=model) for model in ("small", "base")
            for m in ("zeta", "meltr", "alpha", "multitask", "finetune")]
    df = collect_runs(runs)
    assert list(df["model"]) == ["base"] * 5 + ["small"] * 5
    assert list(df["method"][:5]) == ["finetune", "multitask", "meltr", "alpha", "zeta"]


def test_no_meltr_run_skips_weights_plot(tmp_path):
    runs = [make_run(tmp_path / "runs", m) for m in ("finetune", "multitask")]
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "meltr_weights.png").write_bytes(b"stale")
    build_report(runs, tmp_path / "s.csv", report_dir, tmp_path / "m.json")
    assert not (report_dir / "meltr_weights.png").exists()
    assert (report_dir / "quality_vs_throughput.png").read_bytes()[:8] == PNG_MAGIC
    md = (report_dir / "report.md").read_text()
    assert "No MELTR run" in md and "meltr_weights.png" not in md


def test_missing_metrics_json_names_file(tmp_path, runs):
    (runs[1] / "metrics.json").unlink()
    with pytest.raises(MeltrError, match="metrics.json") as err:
        build_report(runs, tmp_path / "s.csv", tmp_path / "r", tmp_path / "m.json")
    assert str(runs[1]) in str(err.value)
    assert not (tmp_path / "s.csv").exists()  # nothing written on bad input


def test_missing_t2v_names_file_and_key(tmp_path, runs):
    path = runs[0] / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["t2v"]
    path.write_text(json.dumps(metrics))
    with pytest.raises(MeltrError, match=r"metrics\.json: missing key 't2v'"):
        build_report(runs, tmp_path / "s.csv", tmp_path / "r", tmp_path / "m.json")


def test_missing_nested_and_throughput_keys(tmp_path, runs):
    path = runs[0] / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["v2t"]["MedR"]
    path.write_text(json.dumps(metrics))
    with pytest.raises(MeltrError, match="'v2t.MedR'"):
        collect_runs(runs)
    path = runs[1] / "throughput.json"
    thr = json.loads(path.read_text())
    del thr["samples_per_s"]
    path.write_text(json.dumps(thr))
    with pytest.raises(MeltrError, match=r"throughput\.json: missing key 'samples_per_s'"):
        collect_runs(runs[1:])


def test_duplicate_run_rejected(tmp_path):
    a = make_run(tmp_path / "a", "meltr")
    b = make_run(tmp_path / "b", "meltr")
    with pytest.raises(MeltrError, match="same dataset/task/model/method"):
        collect_runs([a, b])


def test_bad_train_log_names_line(tmp_path, runs):
    with open(runs[0] / "train_log.jsonl", "a") as f:
        f.write('{"step": 99, "loss": 1.0}\n')
    with pytest.raises(MeltrError, match=r"train_log\.jsonl:21: missing key 'weights'"):
        build_report(runs, tmp_path / "s.csv", tmp_path / "r", tmp_path / "m.json")


def _qa_run(root, method, family, metrics):
    d = make_run(root, method, dataset="tgifqa")
    m = {"dataset": "tgifqa", "task": {"multiple_choice": "action", "open_ended": "frameqa", "count": "count"}[family],
         "family": family, "method": method, "model": "tiny", "n_test": 40, **metrics}
    (d / "metrics.json").write_text(json.dumps(m))
    return d


def test_every_family_gets_its_table_baseline_and_skipped_list(tmp_path):
    root = tmp_path / "runs"
    runs = [_qa_run(root / "mc", m, "multiple_choice", {"accuracy": 35.0, "chance_accuracy": 20.0,
                                                       "chance_p_value": p})
            for m, p in (("finetune", 0.0123), ("meltr", 3.4e-06))]
    runs += [_qa_run(root / "oe", m, "open_ended", {"accuracy": 70.0, "most_frequent_answer_accuracy": 15.0,
                                                    "out_of_vocabulary": "exclude"}) for m in ("finetune", "meltr")]
    runs += [_qa_run(root / "count", m, "count", {"MSE": 3.5, "constant_mean_MSE": 9.4,
                                                   "skipped": {"records": 1, "videos": ["gifs/bad.gif"]}})
             for m in ("finetune", "meltr")]
    cap = make_run(root / "cap", "meltr", dataset="msrvtt")
    scores = {"BLEU1": .5, "BLEU2": .3, "BLEU3": .2, "BLEU4": .1, "METEOR": .15, "ROUGE_L": .4, "CIDEr": .6}
    (cap / "metrics.json").write_text(json.dumps({
        "dataset": "msrvtt", "task": "captioning", "family": "captioning", "method": "meltr", "model": "tiny",
        "n_test": 60, "greedy": {**scores, "CIDEr": 0.5}, "beam": scores}))
    out = tmp_path / "out"
    build_report(runs + [cap], out / "summary.csv", out / "report", out / "metrics.json")
    df = pd.read_csv(out / "summary.csv")
    by = df.set_index(["task", "method"])
    assert by.loc[("action", "meltr"), "score"] == 35.0 and by.loc[("action", "meltr"), "baseline"] == 20.0
    assert by.loc[("action", "meltr"), "chance_p"] == 3.4e-06 and pd.isna(by.loc[("frameqa", "meltr"), "chance_p"])
    assert by.loc[("frameqa", "meltr"), "baseline"] == 15.0
    assert by.loc[("count", "meltr"), "score"] == 3.5 and by.loc[("count", "meltr"), "baseline"] == 9.4
    assert by.loc[("captioning", "meltr"), "score"] == 0.6 and by.loc[("captioning", "meltr"), "CIDEr_greedy"] == 0.5
    md = (out / "report/report.md").read_text()
    for title in ("### Captioning", "### Multiple-choice QA", "### Open-ended QA", "### Count"):
        assert title in md
    assert "### Text-to-video retrieval" not in md  # no retrieval run, no retrieval table
    assert "| 35.00 | 20.00 | 0.012 |" in md and "| 35.00 | 20.00 | 3.4e-06 |" in md  # p in significant digits
    assert "are excluded from the denominator (All-in-one)" in md
    assert "Broken videos skipped (`features.on_bad_video: skip`): 1: `gifs/bad.gif`" in md
    nested = json.loads((out / "metrics.json").read_text())
    assert nested["tgifqa"]["count"]["tiny"]["meltr"]["score"] == 3.5


def _cost_file(path, finetune, multitask, usable_ft=True, usable_mt=True):
    path.write_text(json.dumps({
        "dataset": "msrvtt", "task": "retrieval", "model": "tiny", "rounds": 5, "device": "cpu",
        "meltr_vs_finetune": finetune, "meltr_vs_finetune_iqr": 0.01, "meltr_vs_finetune_usable": usable_ft,
        "meltr_vs_multitask": multitask, "meltr_vs_multitask_iqr": 0.3, "meltr_vs_multitask_usable": usable_mt,
        "mem_meltr_vs_finetune": 1.5, "mem_meltr_vs_multitask": 1.1}))
    return path


def test_the_cost_jobs_ratios_replace_the_division_of_separate_jobs(tmp_path, runs):
    from meltr.report.runs import load_costs

    cost = _cost_file(tmp_path / "cost.json", 0.21, 0.74)
    r = throughput_ratios(collect_runs(runs), load_costs([cost])).iloc[0]
    # The training jobs alone would give 0.4 and 0.5 (see test_throughput_ratios).
    assert r["meltr_vs_finetune"] == pytest.approx(0.21) and r["meltr_vs_multitask"] == pytest.approx(0.74)
    assert r["mem_meltr_vs_multitask"] == pytest.approx(1.1) and r["meltr_vs_multitask_iqr"] == pytest.approx(0.3)
    assert r["source"].startswith("cost job")
    fallback = throughput_ratios(collect_runs(runs)).iloc[0]
    assert fallback["source"] == "separate training jobs" and not fallback["meltr_vs_finetune_usable"]


def test_an_unusable_ratio_is_struck_through_and_not_stated(tmp_path, runs):
    cost = _cost_file(tmp_path / "cost.json", 0.21, 4.11, usable_mt=False)
    report_dir = tmp_path / "r"
    build_report(runs, tmp_path / "s.csv", report_dir, tmp_path / "m.json", costs=[cost])
    md = (report_dir / "report.md").read_text()
    assert "0.21× the throughput of standard fine-tuning" in md
    assert "4.11× the throughput" not in md  # not stated as a finding
    assert "~~4.11× (IQR 0.30)~~ unusable" in md


def test_a_malformed_cost_file_is_one_line(tmp_path, runs):
    bad = tmp_path / "cost.json"
    bad.write_text(json.dumps({"dataset": "msrvtt", "task": "retrieval", "model": "tiny", "rounds": 3,
                               "device": "cpu", "meltr_vs_finetune": "fast"}))
    with pytest.raises(MeltrError, match="meltr_vs_finetune: expected a number"):
        build_report(runs, tmp_path / "s.csv", tmp_path / "r", tmp_path / "m.json", costs=[bad])
