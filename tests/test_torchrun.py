"""`torchrun` launches training and the scaling benchmark on N processes (gloo on CPU here; NCCL on GPUs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import make_tiny_msrvtt
from meltr.cli import main


def _torchrun(args, cwd, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "meltr", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("parallel, meltr", [("ddp", "meltr/finite_difference@current"),
                                             ("fsdp", "meltr/finite_difference")])
def test_bench_scaling_runs_on_two_processes(tmp_path, parallel, meltr):
    out = tmp_path / "scaling.json"
    _torchrun(["bench", "scaling", "--sizes", "micro", "--methods", "finetune", meltr, "--ks", "2",
               "--batch-sizes", "2", "--rounds", "1", "--warmup", "2", "--threads", "1", "--parallel", parallel,
               "--meltr-dropout", "0", "--json", str(out)], tmp_path)
    result = json.loads(out.read_text())
    assert result["world_size"] == 2 and result["parallel"] == parallel
    points = {p["method"]: p for p in result["points"]}
    assert set(points) == {"finetune", meltr}
    for p in points.values():
        assert "samples_per_s" in p and p["global_batch_size"] == 4, p
    assert points[meltr]["meta_step_ms"] > 0 and points[meltr]["ratio_vs_finetune"] > 0


def test_training_runs_on_two_processes_and_rank_0_writes_the_run(tmp_path):
    root = make_tiny_msrvtt(tmp_path)
    assert main(["features", "--manifests", str(root / "prep/train.jsonl"), "--out", str(root / "store"),
                 "--image-size", "16", "--patch-size", "8", "--num-frames", "2"]) == 0
    _torchrun(["train", "--train-manifest", str(root / "prep/train.jsonl"), "--features", str(root / "store"),
               "--out", str(root / "run"), "--method", "meltr", "--steps", "6", "--batch-size", "2", "--threads", "1",
               "--meltr-k", "2", "--meltr-estimator", "finite_difference", "--meltr-meta-batches", "current"], tmp_path)
    throughput = json.loads((root / "run/throughput.json").read_text())
    assert throughput["world_size"] == 2 and throughput["samples_per_s"] > 0
    log = [json.loads(line) for line in (root / "run/train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and sum(e["meta"] for e in log) == 3  # a meta step every k=2 steps
    assert (root / "run/model.pt").exists()


def test_training_under_fsdp2_writes_whole_weights_that_evaluate_reads(tmp_path, capsys):
    root = make_tiny_msrvtt(tmp_path)
    assert main(["features", "--manifests", str(root / "prep/train.jsonl"), str(root / "prep/test.jsonl"),
                 "--out", str(root / "store"), "--image-size", "16", "--patch-size", "8", "--num-frames", "2"]) == 0
    _torchrun(["train", "--train-manifest", str(root / "prep/train.jsonl"), "--features", str(root / "store"),
               "--out", str(root / "run"), "--method", "meltr", "--steps", "4", "--batch-size", "2", "--threads", "1",
               "--parallel", "fsdp", "--meltr-k", "2", "--meltr-estimator", "finite_difference",
               "--meltr-meta-batches", "replay", "--meltr-dropout", "0"], tmp_path)
    log = [json.loads(line) for line in (root / "run/train_log.jsonl").read_text().splitlines()]
    assert sum(e["meta"] for e in log) == 2 and all(not e.get("meta_skipped") for e in log)
    assert main(["evaluate", "--checkpoint", str(root / "run/model.pt"), "--test-manifest", str(root / "prep/test.jsonl"),
                 "--features", str(root / "store"), "--out", str(root / "metrics.json"), "--threads", "1"]) == 0
    assert json.loads((root / "metrics.json").read_text())["t2v"]["R1"] >= 0  # whole weights: loadable, evaluated
    # The estimators that differentiate twice are refused before any process starts training.
    assert main(["train", "--train-manifest", str(root / "prep/train.jsonl"), "--features", str(root / "store"),
                 "--out", str(root / "bad"), "--method", "meltr", "--parallel", "fsdp",
                 "--meltr-estimator", "double_backward"]) == 2
    assert "train.parallel fsdp with method meltr" in capsys.readouterr().err
