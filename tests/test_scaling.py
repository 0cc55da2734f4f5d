"""The scaling study: size presets, `meltr bench scaling`, LoRA adapters under MELTR, and the report."""
from __future__ import annotations

import json
import math

import pytest
import torch

from meltr.cli import main
from meltr.errors import MeltrError
from meltr.models.build import parameter_count
from meltr.models.presets import PRESETS


def test_presets_span_tiny_to_billions_and_their_names_match_their_counts():
    counts = {name: parameter_count(name) for name, p in PRESETS.items()
              if p.family == "univl" and p.text == "random"}
    ladder = ["micro", "tiny", "small", "mini", "base", "100m", "300m", "1b", "3b", "7b"]
    assert [counts[n] for n in ladder] == sorted(counts[n] for n in ladder)
    for name, nominal in {"100m": 1e8, "300m": 3e8, "1b": 1e9, "3b": 3e9, "7b": 7e9}.items():
        assert 0.85 <= counts[name] / nominal <= 1.15, (name, counts[name])


def test_bench_scaling_runs_the_videollm_family_on_captioning(tmp_path):
    out = tmp_path / "vllm.json"
    assert main(["bench", "scaling", "--sizes", "vllm-tiny", "--methods", "finetune", "multitask",
                 "meltr/double_backward", "meltr/finite_difference@current", "--ks", "2", "--batch-sizes", "2",
                 "--rounds", "1", "--warmup", "2", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["interleaved"] is True
    points = {p["method"]: p for p in result["points"]}
    assert set(points) == {"finetune", "multitask", "meltr/double_backward", "meltr/finite_difference@current"}
    for p in points.values():
        assert p["model_family"] == "videollm" and p["task"] == "captioning" and p["samples_per_s"] > 0
        assert p["visual_tokens"] == 8 and p["flops_per_step"] > 0
        assert p["finetune_mfu"] == points["finetune"]["mfu"]  # beside every ratio: is it launch-bound?
    # finetune trains lm alone; multitask adds four losses, three of them on passes of their own
    assert points["multitask"]["flops_per_step"] > 2 * points["finetune"]["flops_per_step"]


def _sweep(tmp_path, *extra) -> dict:
    out = tmp_path / "scaling.json"
    argv = ["bench", "scaling", "--sizes", "micro", "--methods", "finetune", "multitask",
            "meltr/finite_difference@current", "--ks", "1", "2", "--batch-sizes", "2", "--rounds", "1",
            "--warmup", "2", "--threads", "1", "--meltr-dropout", "0", "--json", str(out), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_bench_scaling_records_every_point_with_its_costs_and_ratios(tmp_path, capsys):
    result = _sweep(tmp_path)
    assert "meltr/finite_difference@current" in capsys.readouterr().out
    points = result["points"]
    by = {(p["method"], p["k"]): p for p in points}
    assert set(by) == {("finetune", None), ("multitask", None), ("meltr/finite_difference@current", 1),
                       ("meltr/finite_difference@current", 2)}
    for p in points:
        assert p["params"] == parameter_count("micro", 1024) and p["samples_per_s"] > 0 and p["peak_mem_mb"] > 0
        assert p["flops_per_step"] > 0 and 0 < p["mfu"] and p["step_ms_iqr"] >= 0
    k1, k2 = by[("meltr/finite_difference@current", 1)], by[("meltr/finite_difference@current", 2)]
    assert k1["steps_timed"] == 1 and k2["steps_timed"] == 2  # one window of exactly k steps per round
    assert k1["meta_step_ms"] > 0 and k1["flops_meta"] > 0
    # The meta step's FLOPs are spread over k steps: more steps per meta step, fewer FLOPs per step.
    assert k1["flops_per_step"] == pytest.approx(k1["flops_step"] + k1["flops_meta"])
    assert k2["flops_per_step"] == pytest.approx(k2["flops_step"] + k2["flops_meta"] / 2)
    mt = by[("multitask", None)]
    # One round: the per-round ratio is the ratio of the two windows' samples/s, and one round is too few to
    # tell its spread, so the ratio is marked unusable.
    assert k1["ratio_vs_multitask"] == pytest.approx(k1["samples_per_s"] / mt["samples_per_s"])
    assert k1["ratio_vs_multitask_usable"] is False and k1["ratio_vs_multitask_iqr"] == 0
    assert result["interleaved"] is True and all(p["interleaved"] for p in points)
    assert k1["mem_ratio_vs_multitask"] == pytest.approx(k1["peak_mem_mb"] / mt["peak_mem_mb"])
    # Finetune computes one loss: its counted FLOPs are well below multitask's eight.
    assert by[("finetune", None)]["flops_step"] < 0.5 * mt["flops_step"]
    assert result["precision"] == "fp32" and result["peak_flops"] > 0 and result["world_size"] == 1


def test_an_out_of_memory_point_is_a_result_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from meltr.bench import runner

    real_run = runner.Contender.run

    def run(self, n, window=None):
        if self.name == "multitask":  # builds, then runs out of memory in its first steps
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_run(self, n, window)

    monkeypatch.setattr(runner.Contender, "run", run)
    result = _sweep(tmp_path)
    mt = [p for p in result["points"] if p["method"] == "multitask"]
    assert len(mt) == 1 and mt[0]["oom"] is True and mt[0]["oom_stage"] == "warm-up"
    # It ran out of memory beside finetune, so the cell was measured again one method at a time.
    assert all(p["interleaved"] is False for p in result["points"])
    assert "Tried to allocate" in mt[0]["error"]
    meltr = [p for p in result["points"] if p["method"].startswith("meltr")]
    assert len(meltr) == 2 and all(p["samples_per_s"] > 0 for p in meltr)  # measured after the failure
    assert all("ratio_vs_multitask" not in p for p in meltr) and all(p["ratio_vs_finetune"] > 0 for p in meltr)


def test_lora_trains_only_adapters_and_meltr_takes_its_hypergradient_over_them():
    from meltr.combiners import build_combiner
    from meltr.combiners.meltr import trainable
    from meltr.models.losses import PRIMARY, task_losses
    from meltr.bench.runner import synthetic_batches
    from meltr.models.build import build_model
    from meltr.train.loop import run_step

    torch.manual_seed(0)
    model = build_model("micro", 16, 30522, 8, 4, seed=0, adapters="lora", lora_rank=4)
    names, params = trainable(model)
    assert names and all("lora_" in n or n.split(".")[0] in ("align_head", "logit_scale", "mfm_head", "mc_head",
                                                             "oe_head", "count_head", "lm_transform", "lm_bias")
                         for n in names)
    assert any("lora_B" in n for n in names)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters_before = {n: p.detach().clone() for n, p in zip(names, params) if "lora_" in n}
    combiner = build_combiner("meltr", list(task_losses("retrieval")), PRIMARY["retrieval"],
                              {"k": 1, "estimator": "finite_difference", "meta_batches": "current", "seed": 0,
                               "dropout": 0.0})
    net_before = torch.cat([p.detach().reshape(-1) for p in combiner.net.parameters()]).clone()
    opt = torch.optim.AdamW(params, lr=1e-2)
    batches = synthetic_batches(3, 2, 4, 8, 16, 0, torch.device("cpu"))
    for step, batch in enumerate(batches, 1):
        r = run_step(model, combiner, opt, params, batch, step, step, torch.device("cpu"))
        assert r.meta is not None and not r.meta["meta_skipped"]
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n  # the backbone never moves, not even by the FD perturbation
    assert any(not torch.equal(dict(zip(names, params))[n], b) for n, b in adapters_before.items())
    assert not torch.equal(torch.cat([p.detach().reshape(-1) for p in combiner.net.parameters()]), net_before)


def _write_sweep(path, device, points):
    path.write_text(json.dumps({"device": device, "precision": "bf16 autocast", "points": points}))
    return path


def _point(size, params, method, k, sps, mem, **extra):
    return {"size": size, "params": params, "method": method, "k": k, "batch_size": 8, "adapters": "none",
            "samples_per_s": sps, "peak_mem_mb": mem, "step_ms": 1.0, "step_ms_iqr": 0.1, "oom": False, **extra}


def test_scaling_report_fits_slopes_and_the_largest_size_that_fits(tmp_path):
    from meltr.report.scaling import build_scaling, largest_fit, load_points, slopes

    points = []
    for size, params, ratio, mem in [("a", 1e6, 0.5, 1000.0), ("b", 1e7, 0.6, 2000.0), ("c", 1e8, 0.7, 3000.0)]:
        points += [_point(size, params, "multitask", None, 100.0, mem),
                   _point(size, params, "finetune", None, 200.0, mem / 2),
                   _point(size, params, "meltr/finite_difference@current", 3, 100.0 * ratio, mem,
                          ratio_vs_multitask=ratio, ratio_vs_finetune=ratio / 2)]
    points.append({"size": "d", "params": 1e9, "method": "multitask", "batch_size": 8, "adapters": "none",
                   "oom": True, "oom_stage": "warm-up", "error": "CUDA out of memory"})
    df = load_points([_write_sweep(tmp_path / "gpu.json", "GPU X", points)])
    s = slopes(df).set_index("method")
    assert s.loc["meltr/finite_difference@current", "ratio_vs_multitask_per_decade"] == pytest.approx(0.1)
    assert s.loc["meltr/finite_difference@current", "ratio_vs_finetune_per_decade"] == pytest.approx(0.05)
    assert s.loc["multitask", "samples_per_s_exponent"] == pytest.approx(0.0, abs=1e-12)
    mem_exponent = s.loc["multitask", "peak_mem_exponent"]
    assert mem_exponent == pytest.approx(math.log10(3) / 2, rel=0.2)
    fits = largest_fit(df, [80]).set_index("method")
    assert fits.loc["multitask", "largest_measured"] == "c" and fits.loc["multitask", "smallest_out_of_memory"] == "d"
    # Peak MiB against params: the least-squares line through (1e6, 1000), (1e7, 2000), (1e8, 3000).
    import numpy as np
    a, b = np.polyfit([1e6, 1e7, 1e8], [1000.0, 2000.0, 3000.0], 1)
    assert fits.loc["multitask", "fits_80GB_params_b"] == pytest.approx((80 * 1024 - b) / a / 1e9)
    md = build_scaling(df, tmp_path, tmp_path / "scaling.csv", tmp_path / "slopes.csv", [80])
    assert "0.50–0.70 of multitask's samples/s" in md and "out of memory (warm-up)" in md
    assert "multitask itself runs out of memory from `d` on" in md
    for name in ("scaling_throughput.png", "scaling_memory.png", "scaling_ratio_multitask.png", "slopes.csv"):
        assert (tmp_path / name).stat().st_size > 0


def test_a_malformed_scaling_file_is_one_clear_error(tmp_path):
    from meltr.report.scaling import load_points

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"device": "x", "precision": "fp32", "points": [{"size": "a", "params": 1}]}))
    with pytest.raises(MeltrError, match=r"bad.json: points\[0\]: missing key 'method'"):
        load_points([bad])
    (tmp_path / "notjson.json").write_text("{")
    with pytest.raises(MeltrError, match="notjson.json: expected a `meltr bench scaling` JSON file"):
        load_points([tmp_path / "notjson.json"])


def test_unknown_scaling_method_or_size_is_one_line(capsys):
    assert main(["bench", "scaling", "--methods", "meltr/bogus"]) == 2
    assert "scaling method 'meltr/bogus'" in capsys.readouterr().err
    assert main(["bench", "scaling", "--sizes", "huge"]) == 2
    assert "model size 'huge'" in capsys.readouterr().err
