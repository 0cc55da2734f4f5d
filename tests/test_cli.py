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
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip() and "%|" not in ln]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("flags, expected", [
    (["--method", "bogus"], "method 'bogus'"),
    (["--model", "huge"], "model size 'huge'"),
    (["--batch-size", "0"], "train.batch_size"),
    (["--steps", "0"], "train.steps"),
    (["--meltr-k", "0"], "meltr.k"),
    (["--meltr-estimator", "magic"], "meltr.estimator"),
    # numbers checked where they enter: finite, typed, in range (each used to train or crash)
    (["--grad-clip", "-1"], "train.grad_clip: expected a finite number > 0, got -1.0"),
    (["--lr", "inf"], "train.lr: expected a finite number > 0, got inf"),
    (["--lr", "nan"], "train.lr: expected a finite number > 0, got nan"),
    (["--lr", "-0.1"], "train.lr"),
    (["--warmup-frac", "nan"], "train.warmup_frac: expected a finite number in [0, 1]"),
    (["--threads", "-1"], "train.threads: expected an integer >= 1 or null"),
    (["--mask-prob", "2"], "train.mask_prob: expected a finite number in [0, 1)"),
    (["--meltr-beta2", "1"], "meltr.beta2"),
    (["--meltr-fd-eps", "0"], "meltr.fd_eps"),
    (["--method", "meltr", "--steps", "2", "--meltr-k", "3"], "MELTR would never take a meta step"),
    (["--device", "cuda:99"], "train.device 'cuda:99'"),
    (["--device", "tpu"], "train.device 'tpu': expected auto, cpu, cuda or cuda:N"),
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


def test_non_finite_features_are_refused_naming_the_clip(prepared, tmp_path, capsys):
    import numpy as np

    assert _features(prepared, tmp_path / "store") == 0
    feats = np.load(tmp_path / "store/features.npy")
    feats[1, 0, 0] = np.nan
    np.save(tmp_path / "store/features.npy", feats)
    capsys.readouterr()
    code = main(["train", "--train-manifest", str(prepared / "prep/train.jsonl"), "--features", str(tmp_path / "store"),
                 "--out", str(tmp_path / "run"), "--steps", "20", "--batch-size", "2"])
    assert code == 2
    line = one_error_line(capsys)
    assert "features of clip" in line and "are not finite (1 clips)" in line
    assert not (tmp_path / "run/model.pt").exists()


def _diverging(prepared, tmp_path, *flags):
    """Training at lr 1e30: the first step blows the weights up, every later loss is not finite."""
    assert _features(prepared, tmp_path / "store") == 0
    return main(["train", "--train-manifest", str(prepared / "prep/train.jsonl"), "--features", str(tmp_path / "store"),
                 "--out", str(tmp_path / "run"), "--batch-size", "2", "--lr", "1e30", "--warmup-frac", "0", *flags])


def test_a_loss_that_stays_nan_stops_training_with_one_line(prepared, tmp_path, capsys):
    assert _diverging(prepared, tmp_path, "--steps", "20", "--nan-patience", "3") == 2
    line = one_error_line(capsys)
    assert "not finite for 3 consecutive steps" in line and "expected finite losses" in line
    assert not (tmp_path / "run/model.pt").exists()


def test_a_run_whose_last_steps_went_non_finite_is_not_saved_as_a_success(prepared, tmp_path, capsys):
    assert _diverging(prepared, tmp_path, "--steps", "5", "--nan-patience", "50") == 2
    line = one_error_line(capsys)
    assert "had non-finite losses" in line and "nothing was saved" in line
    assert not (tmp_path / "run/model.pt").exists() and not (tmp_path / "run/throughput.json").exists()


def test_an_output_folder_under_a_file_is_one_line_exit_2(prepared, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["prepare", "--root", str(prepared / "raw"), "--out", str(blocker / "prep")]) == 2
    line = one_error_line(capsys)
    assert line.startswith("meltr prepare: error: ") and str(blocker) in line


def test_a_manifest_with_a_latin1_byte_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "train.jsonl"
    bad.write_bytes(b'{"id": "a"}\n{"caption": "caf\xe9"}\n')
    assert main(["features", "--manifests", str(bad), "--out", str(tmp_path / "f")]) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and "line 2" in line and "UTF-8" in line


def test_a_bug_is_one_line_naming_where_and_debug_shows_the_traceback(prepared, tmp_path, capsys, monkeypatch):
    from meltr.data import registry

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(registry, "prepare", broken)
    argv = ["prepare", "--root", str(prepared / "raw"), "--out", str(tmp_path / "p")]
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert "internal error: ZeroDivisionError: division by zero" in line and "--debug" in line
    with pytest.raises(ZeroDivisionError):
        main(["--debug", *argv])
    monkeypatch.setenv("MELTR_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(argv)


def test_ctrl_c_is_one_line_and_exit_130(prepared, tmp_path, capsys, monkeypatch):
    from meltr.data import registry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "prepare", interrupted)
    assert main(["prepare", "--root", str(prepared / "raw"), "--out", str(tmp_path / "p")]) == 130
    assert "interrupted" in one_error_line(capsys)


def test_training_checks_its_output_folder_before_the_first_step(prepared, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["train", "--train-manifest", str(prepared / "prep/train.jsonl"), "--features",
                 str(tmp_path / "nofeatures"), "--out", str(blocker / "run"), "--steps", "5"]) == 2
    line = one_error_line(capsys)
    # the output folder is refused first, although the feature store is missing too
    assert f"{blocker / 'run'}: expected a folder this job can write its outputs to" in line
