"""`meltr bench meltr-step` runs every method on the same batches and writes the documented keys."""
from __future__ import annotations

import json

from meltr.cli import main


def test_meltr_step_bench_writes_ratios_and_errors(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "meltr-step", "--model", "micro", "--k", "3", "--steps", "3", "--batch-size", "4",
                 "--threads", "1", "--meltr-dropout", "0", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "meltr/finite_difference" in table and "multitask" in table
    result = json.loads(out.read_text())
    assert result["steps_timed"] == 21  # at least 20 timed steps, a multiple of k
    for name in ("double_backward", "neumann", "jvp", "finite_difference", "jvp@current",
                 "finite_difference@current"):
        est = result["estimators"][name]
        for key in ("ratio_vs_multitask", "ratio_vs_finetune", "mem_ratio_vs_multitask",
                    "rel_err_vs_double_backward", "meta_step_ms"):
            assert key in est
        assert est["ratio_vs_multitask"] > 0
    assert result["interleaved"] is True and result["rounds"] == 7 and "interleaved" in result["timing"]
    for name in ("jvp", "finite_difference", "jvp@current", "finite_difference@current"):
        assert result["estimators"][name]["cosine_vs_double_backward"] > 0.999, name
    assert result["estimators"]["finite_difference"]["rel_err_vs_double_backward"] < 1e-2
    assert result["estimators"]["jvp"]["rel_err_vs_double_backward"] < 1e-4
    assert result["estimators"]["finite_difference@current"]["rel_err_vs_double_backward"] < 1e-2
    assert result["estimators"]["jvp@current"]["rel_err_vs_double_backward"] < 1e-4
    assert result["estimators"]["jvp"]["attention_kernel"] == "math (meta step)"
    assert result["estimators"]["finite_difference"]["attention_kernel"] == "default"


def test_unknown_model_size_is_one_line(capsys):
    assert main(["bench", "meltr-step", "--model", "huge"]) == 2
    assert "model size 'huge'" in capsys.readouterr().err


def test_bench_cost_times_a_tasks_methods_interleaved_on_its_own_batches(tmp_path, capsys):
    from conftest import make_tiny_msrvtt

    root = make_tiny_msrvtt(tmp_path, n_train=8, n_test=4)
    assert main(["features", "--manifests", str(root / "prep/train.jsonl"), "--out", str(root / "feats"),
                 "--threads", "1"]) == 0
    out = tmp_path / "cost.json"
    assert main(["bench", "cost", "--dataset", "msrvtt", "--task", "retrieval", "--model", "micro",
                 "--train-manifest", str(root / "prep/train.jsonl"), "--features", str(root / "feats"),
                 "--batch-size", "4", "--rounds", "3", "--warmup", "3", "--threads", "1", "--meltr-k", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["interleaved"] is True and result["rounds"] == 3 and result["k"] == 2
    assert result["estimator"] == "finite_difference" and result["meta_batches"] == "current"
    for method in ("finetune", "multitask", "meltr"):
        m = result["methods"][method]
        # one window per round: k steps for MELTR, k steps for the baselines (max(k) with a single k)
        assert m["steps_timed"] == 6 and m["rounds"] == 3 and m["samples_per_s"] > 0 and m["peak_mem_mb"] > 0
    assert result["methods"]["meltr"]["meta_step_ms"] > 0 and result["methods"]["multitask"]["meta_step_ms"] is None
    for base in ("finetune", "multitask"):
        assert result[f"meltr_vs_{base}"] > 0 and result[f"meltr_vs_{base}_iqr"] >= 0
        assert isinstance(result[f"meltr_vs_{base}_usable"], bool)
    # Finetune computes one loss, MELTR eight and a meta step: MELTR is slower.
    assert result["meltr_vs_finetune"] < 1


def test_bench_cost_refuses_zero_rounds(tmp_path, capsys):
    assert main(["bench", "cost", "--dataset", "msrvtt", "--task", "retrieval", "--train-manifest", "x",
                 "--features", "y", "--out", str(tmp_path / "c.json"), "--rounds", "0"]) == 2
    assert "cost.rounds: expected an integer >= 1" in capsys.readouterr().err
