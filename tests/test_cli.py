"""The CLI turns bad input into one line on stderr and exit code 2, and writes nothing."""
from __future__ import annotations

import json

import pytest

from conftest import make_tiny_msrvtt
from meltr.cli import main


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_tiny_msrvtt(tmp_path_factory.mktemp("cli"))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
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
