"""The CLI turns bad input into one line on stderr and exit code 2, and writes nothing."""
from __future__ import annotations

import json

import pytest

from conftest import make_tiny_msrvtt
from meltr.cli import main
from meltr.metrics import chance_p_value


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_tiny_msrvtt(tmp_path_factory.mktemp("cli"))


def one_error_line(capsys) -> str:
    """The error: one line, and nothing else on stderr but progress bars (tqdm draws on stderr)."""
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "%|" not in ln]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("flags, expected", [
    (["--method", "bogus"], "method 'bogus'"),
    (["--model", "huge"], "model size 'huge'"),
    (["--batch-size", "0"], "train.batch_size"),
    (["--steps", "0"], "train.steps"),
    (["--meltr-k", "0"], "meltr.k"),
    (["--meltr-estimator", "magic"], "meltr.estimator"),
])
def test_bad_train_settings_exit_2_with_one_line(prepared, tmp_path, capsys, flags, expected):
    code = main(["train", "--train-manifest", str(prepared / "prep/train.jsonl"), "--features",
                 str(tmp_path / "nofeatures"), "--out", str(tmp_path / "run"), *flags])
    assert code == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_missing_feature_store_names_the_file(prepared, tmp_path, capsys):
    code = main(["train", "--train-manifest", str(prepared / "prep/train.jsonl"), "--features",
                 str(tmp_path / "nofeatures"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "nofeatures" in one_error_line(capsys)


def test_malformed_annotation_names_file_and_writes_nothing(prepared, tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in (prepared / "raw").iterdir():
        if f.is_file():
            (raw / f.name).write_bytes(f.read_bytes())
    (raw / "MSRVTT_data.json").write_text('{"videos": [}')
    code = main(["prepare", "--root", str(raw), "--out", str(tmp_path / "prep")])
    assert code == 2
    assert "MSRVTT_data.json" in one_error_line(capsys)
    assert not (tmp_path / "prep" / "train.jsonl").exists()


def test_malformed_manifest_line_is_named(tmp_path, capsys):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"video_id": "video0", "captions": ["a"]}) + "\n{not json\n")
    code = main(["train", "--train-manifest", str(manifest), "--features", str(tmp_path), "--out",
                 str(tmp_path / "run")])
    assert code == 2
    assert f"{manifest}:2" in one_error_line(capsys)


def test_missing_checkpoint(prepared, tmp_path, capsys):
    code = main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--test-manifest",
                 str(prepared / "prep/test.jsonl"), "--features", str(tmp_path), "--out", str(tmp_path / "m.json")])
    assert code == 2
    assert "none.pt" in one_error_line(capsys)
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--dataset", "kinetics"], "dataset 'kinetics'"),
    (["--dataset", "tvqa", "--task", "retrieval"], "task 'retrieval' of dataset 'tvqa'"),
    (["--loss-set", "univl9"], "train.loss_set"),
])
def test_unknown_dataset_task_or_loss_set(prepared, tmp_path, capsys, flags, expected):
    code = main(["train", "--train-manifest", str(prepared / "prep/train.jsonl"), "--features",
                 str(tmp_path / "nofeatures"), "--out", str(tmp_path / "run"), *flags])
    assert code == 2 and expected in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def _features(prepared, out, *flags):
    return main(["features", "--manifests", str(prepared / "prep/train.jsonl"), str(prepared / "prep/test.jsonl"),
                 "--out", str(out), "--image-size", "16", "--patch-size", "8", "--num-frames", "2", *flags])


@pytest.fixture
def broken(prepared, tmp_path):
    """A copy of the tiny MSRVTT with one truncated mp4, one empty (no frames) and one missing."""
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(prepared / "raw", root / "raw")
    videos = sorted((root / "raw/videos").iterdir())
    data = videos[0].read_bytes()
    videos[0].write_bytes(data[: len(data) // 3])
    videos[1].write_bytes(b"")
    videos[2].unlink()
    assert main(["prepare", "--root", str(root / "raw"), "--out", str(root / "prep"), "--check-media", "false"]) == 0
    return root, [str(v) for v in videos[:3]]


def test_broken_videos_stop_the_feature_stage_by_default(broken, capsys):
    root, bad = broken
    capsys.readouterr()
    assert _features(root, root / "store") == 2
    line = one_error_line(capsys)
    assert any(b in line for b in bad) and ("cannot decode" in line or "not found" in line or "no frames" in line)
    assert not (root / "store").exists()  # nothing half-written


def test_on_bad_video_skip_lists_them_and_training_goes_on(broken, capsys):
    from meltr.features.store import FeatureStore

    root, bad = broken
    assert _features(root, root / "store", "--on-bad-video", "skip") == 0
    store = FeatureStore(root / "store")
    assert sorted(s["video"] for s in store.skipped) == sorted(bad)
    assert all(s["error"] for s in store.skipped)
    assert main(["train", "--train-manifest", str(root / "prep/train.jsonl"), "--features", str(root / "store"),
                 "--out", str(root / "run"), "--steps", "2", "--batch-size", "2", "--timing-warmup", "0"]) == 0
    thr = json.loads((root / "run/throughput.json").read_text())
    train_ids = {json.loads(line)["video"] for line in (root / "prep/train.jsonl").read_text().splitlines()}
    assert thr["skipped_videos"] == sorted(set(bad) & train_ids)
    assert main(["evaluate", "--checkpoint", str(root / "run/model.pt"), "--test-manifest",
                 str(root / "prep/test.jsonl"), "--features", str(root / "store"), "--out", str(root / "m.json")]) == 0
    metrics = json.loads((root / "m.json").read_text())
    test_ids = {json.loads(line)["video"] for line in (root / "prep/test.jsonl").read_text().splitlines()}
    assert metrics["skipped"]["videos"] == sorted(set(bad) & test_ids)
    assert metrics["n_test"] == len(test_ids) - len(set(bad) & test_ids)
    # retrieval's chance p-value: R@1 hits against 1/n per caption
    n = metrics["n_test"]
    assert metrics["chance_R1"] == pytest.approx(100 / n)
    assert metrics["chance_p_value"] == pytest.approx(chance_p_value(round(metrics["t2v"]["R1"] * n / 100), n, 1 / n))


def test_a_loss_that_stays_nan_stops_training_with_one_line(prepared, tmp_path, capsys):
    import numpy as np

    assert _features(prepared, tmp_path / "store") == 0
    feats = np.load(tmp_path / "store/features.npy")
    np.save(tmp_path / "store/features.npy", np.full_like(feats, np.nan))
    capsys.readouterr()
    code = main(["train", "--train-manifest", str(prepared / "prep/train.jsonl"), "--features", str(tmp_path / "store"),
                 "--out", str(tmp_path / "run"), "--steps", "20", "--batch-size", "2", "--nan-patience", "3"])
    assert code == 2
    line = one_error_line(capsys)
    assert "not finite for 3 consecutive steps" in line and "expected finite losses" in line
    assert not (tmp_path / "run/model.pt").exists()
