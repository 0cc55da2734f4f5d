"""`meltr bench meltr-step` runs every method on the same batches and writes the documented keys."""
from __future__ import annotations

import json

from meltr.cli import main


def test_meltr_step_bench_writes_ratios_and_errors(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "meltr-step", "--model", "tiny", "--k", "3", "--steps", "3", "--batch-size", "4",
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
