"""A training job killed with SIGKILL resumes from its last checkpoint and ends exactly where an
uninterrupted run ends (bitwise on CPU)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_tiny_msrvtt
from meltr.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_tiny_msrvtt(tmp_path_factory.mktemp("resume"), n_train=12)
    assert main(["features", "--manifests", str(root / "prep/train.jsonl"), str(root / "prep/test.jsonl"),
                 "--out", str(root / "feats"), "--threads", "1"]) == 0
    return root


def train_args(data, out, method):
    return ["train", "--method", method, "--model", "tiny", "--train-manifest", str(data / "prep/train.jsonl"),
            "--features", str(data / "feats"), "--out", str(out), "--steps", "40", "--batch-size", "4",
            "--checkpoint-every", "4", "--threads", "1", "--meltr-k", "2"]


def assert_same_run(a, b):
    ca, cb = (torch.load(p / "model.pt", weights_only=False) for p in (a, b))
    for part in ("model", "combiner"):
        tensors_a = {k: v for k, v in ca[part].items() if isinstance(v, torch.Tensor)}
        tensors_b = {k: v for k, v in cb[part].items() if isinstance(v, torch.Tensor)}
        assert tensors_a.keys() == tensors_b.keys()
        for k in tensors_a:
            assert torch.equal(tensors_a[k], tensors_b[k]), f"{part}.{k}"
    la = [json.loads(x) for x in (a / "train_log.jsonl").open()]
    lb = [json.loads(x) for x in (b / "train_log.jsonl").open()]
    assert [e["losses"] for e in la] == [e["losses"] for e in lb]
    assert [e.get("weights") for e in la] == [e.get("weights") for e in lb]


@pytest.mark.parametrize("method", ["multitask", "famo", "meltr"])  # famo: its own optimiser and extra forward
def test_sigkill_then_rerun_matches_an_uninterrupted_run(data, tmp_path, method):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(train_args(data, straight, method)) == 0
    assert not (straight / "checkpoint.pt").exists()

    proc = subprocess.Popen([sys.executable, "-m", "meltr", *train_args(data, killed, method)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoint.pt").exists() and not (killed / "model.pt").exists()

    assert main(train_args(data, killed, method)) == 0
    throughput = json.loads((killed / "throughput.json").read_text())
    resumed = throughput["resumed_from"]
    assert resumed and resumed[0] % 4 == 0 and 0 < resumed[0] < 40
    # The resumed process timed only its own steps, after its own warm-up (train.timing_warmup: 10).
    own = 40 - resumed[0]
    assert throughput["resumed"] is True and throughput["steps_timed"] <= (own - 10 if own > 10 else own)
    assert_same_run(straight, killed)
    assert not (killed / "checkpoint.pt").exists()


def test_checkpoint_of_other_settings_is_ignored(data, tmp_path):
    out = tmp_path / "run"
    args = train_args(data, out, "multitask")
    args[args.index("--steps") + 1] = "8"
    assert main(args + ["--checkpoint-every", "4"]) == 0
    # A stale checkpoint from different settings must not be resumed.
    torch.save({"fingerprint": {"lr": 123.0}, "state": {"step": 4}}, out / "checkpoint.pt")
    assert main(args) == 0
    assert json.loads((out / "throughput.json").read_text())["resumed_from"] == []


def _features_args(data, out):
    return ["features", "--manifests", str(data / "prep/train.jsonl"), str(data / "prep/test.jsonl"),
            "--out", str(out), "--threads", "1", "--batch-size", "2"]


def test_killed_feature_stage_leaves_no_store_and_reruns_cleanly(data, tmp_path):
    """SIGKILL in the middle of extraction: no folder that looks like a store (atomic rename), and a rerun
    writes the same store as an uninterrupted run."""
    from meltr.features.store import FeatureStore

    out = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "meltr", *_features_args(data, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # tqdm's first progress update: the backbone is built and extraction has begun
    while proc.poll() is None and time.time() < deadline and "features:" not in (proc.stderr.read(64) or ""):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # only a hidden temporary folder may remain beside it
    assert main(_features_args(data, out)) == 0
    import numpy as np

    np.testing.assert_array_equal(FeatureStore(out).array, FeatureStore(data / "feats").array)


def test_feature_jobs_side_by_side_do_not_collide(data, tmp_path):
    """Two extractions into the same parent folder at the same time (as two datasets' jobs would run):
    each gets its own temporary folder and both stores come out whole."""
    from meltr.features.store import FeatureStore

    procs = [subprocess.Popen([sys.executable, "-m", "meltr", *_features_args(data, tmp_path / name)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a, b = FeatureStore(tmp_path / "a"), FeatureStore(tmp_path / "b")
    assert a.video_ids == b.video_ids and (a.array == b.array).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folder left behind


def test_many_writers_of_one_store_take_turns_and_leave_it_whole(tmp_path):
    """The store swap under a lock: eight processes write the same folder over and over at once; every swap
    completes (no error from renaming into another's half-swap) and the folder ends whole, with no
    temporary folder left behind."""
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nfrom meltr.io import atomic_dir\n"
        "for i in range(40):\n"
        "    with atomic_dir(sys.argv[1]) as tmp:\n"
        "        (tmp / 'a.txt').write_text(sys.argv[2] * 1000)\n"
        "        (tmp / 'b.txt').write_text(sys.argv[2])\n")
    store = tmp_path / "out" / "store"
    procs = [subprocess.Popen([sys.executable, str(script), str(store), str(n)], stderr=subprocess.PIPE, text=True)
             for n in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    a, b = (store / "a.txt").read_text(), (store / "b.txt").read_text()
    assert a == b * 1000  # both files from the same writer: one whole folder
    assert sorted(p.name for p in store.parent.iterdir()) == ["store"]
