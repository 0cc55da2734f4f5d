"""`meltr synth` -> `meltr data check` -> `meltr prepare` for every dataset, through the CLI.

The check must count exactly what the synthetic writers say they wrote; broken annotations and media give
one-line errors (exit code 2) and leave no partial output.
"""
from __future__ import annotations

import json
import shutil

import pytest

from meltr.cli import main
from meltr.data.registry import DATASETS
from meltr.data.records import COMMON_KEYS, TASK_KEYS

SYNTH_ARGS = {
    "msrvtt": ["--n-train", "10", "--n-test", "4", "--seconds", "2", "--size", "32", "--captions-per-video", "3"],
    "youcook2": ["--n-train-videos", "4", "--n-val-videos", "2", "--segments-per-video", "2", "--size", "32"],
    "tgifqa": ["--n-train", "6", "--n-test", "4", "--size", "32"],
    "tvqa": ["--n-train", "6", "--n-val", "4", "--n-test", "2", "--size", "32"],
    "msvdqa": ["--n-train", "6", "--n-val", "4", "--n-test", "4", "--size", "32"],
}


def run(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Each dataset written once, with what its writer reported."""
    root = tmp_path_factory.mktemp("synth")
    written = {}
    for name, args in SYNTH_ARGS.items():
        assert main(["synth", "--dataset", name, "--out", str(root / name), *args]) == 0
        written[name] = root / name
    return written


def synth_counts(capsys, tmp_path, name):
    code, counts, _ = run(capsys, "synth", "--dataset", name, "--out", str(tmp_path / name), *SYNTH_ARGS[name])
    assert code == 0
    return counts


@pytest.mark.parametrize("name", list(DATASETS))
def test_check_counts_match_what_synth_wrote(capsys, tmp_path, name):
    written = synth_counts(capsys, tmp_path, name)
    code, report, _ = run(capsys, "data", "check", "--dataset", name, "--root", str(tmp_path / name))
    assert code == 0 and report["missing_media"] == []
    tasks = report["tasks"]
    assert set(tasks) == set(DATASETS[name].tasks)
    if name == "msrvtt":
        assert tasks["retrieval"]["train"]["videos"] == written["train_9k"] == 10
        assert tasks["retrieval"]["test"]["videos"] == written["test"] == 4
        assert tasks["retrieval"]["test"]["captions"] == 4  # 1k-A: one caption per test video
        assert tasks["captioning"]["test"]["captions"] == 4 * 3  # captioning: every reference
    elif name == "youcook2":
        for task in ("retrieval", "captioning"):
            for split in ("train", "val"):
                for key in ("videos", "clips", "captions"):
                    assert tasks[task][split][key] == written[split][key], (task, split, key)
    elif name == "tgifqa":
        for task in tasks:
            for split in ("train", "test"):
                assert tasks[task][split]["questions"] == written[task][split]["questions"]
                assert tasks[task][split]["videos"] == written[task][split]["gifs"]
    else:
        for split in ("train", "val", "test"):
            assert tasks["qa"][split]["questions"] == written[split]["questions"]
            assert tasks["qa"][split]["videos"] == written[split]["clips"]


@pytest.mark.parametrize("name", list(DATASETS))
def test_prepare_every_task_writes_normalised_records(capsys, synthetic, tmp_path, name):
    for task, family in DATASETS[name].tasks.items():
        out = tmp_path / name / task
        code, summary, err = run(capsys, "prepare", "--dataset", name, "--task", task, "--root",
                                 str(synthetic[name]), "--out", str(out))
        assert code == 0, err
        assert summary["family"] == family and summary["eval_split"] == DATASETS[name].eval_split
        for split in ("train", "test"):
            lines = (out / f"{split}.jsonl").read_text().splitlines()
            assert len(lines) == summary[split]["records"] > 0
            for rec in map(json.loads, lines):
                assert set(COMMON_KEYS + TASK_KEYS[family]) <= set(rec)


def test_check_lists_missing_media(capsys, synthetic, tmp_path):
    root = tmp_path / "tgifqa"
    shutil.copytree(synthetic["tgifqa"], root)
    # two GIFs that the Count test questions use (the gif name is the first column)
    names = [line.split("\t")[0] for line in (root / "Test_count_question.csv").read_text().splitlines()[1:3]]
    gone = sorted(root / "gifs" / f"{n}.gif" for n in names)
    for g in gone:
        g.unlink()
    code, report, _ = run(capsys, "data", "check", "--dataset", "tgifqa", "--root", str(root))
    assert code == 0
    assert report["missing_media"] == sorted(str(g) for g in gone)
    # prepare refuses, naming a missing file, and writes nothing
    code, _, err = run(capsys, "prepare", "--dataset", "tgifqa", "--task", "count", "--root", str(root),
                       "--out", str(tmp_path / "prep"))
    assert code == 2 and "video file not found" in err and str(gone[0]) in err
    assert not (tmp_path / "prep").exists()


@pytest.mark.parametrize("damage, expected", [
    (lambda root: (root / "Train_action_question.csv").write_bytes(b"gif_name\tquestion\r\nx\ty\r\n"),
     "Train_action_question.csv"),
    (lambda root: (root / "Test_count_question.csv").unlink(), "Test_count_question.csv"),
])
def test_malformed_annotation_is_one_line_exit_2(capsys, synthetic, tmp_path, damage, expected):
    root = tmp_path / "tgifqa"
    shutil.copytree(synthetic["tgifqa"], root)
    damage(root)
    code, _, err = run(capsys, "data", "check", "--dataset", "tgifqa", "--root", str(root))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, expected", [
    (["prepare", "--dataset", "tvqa", "--task", "captioning"], "task 'captioning' of dataset 'tvqa'"),
    (["prepare", "--dataset", "tgifqa", "--task", "count", "--train-list", "7k"], "--train-list"),
    (["synth", "--dataset", "tvqa", "--n-train-videos", "3"], "--n-train-videos"),
])
def test_wrong_task_or_option_is_named(capsys, synthetic, tmp_path, argv, expected):
    root = synthetic[argv[2]] if argv[0] == "prepare" else tmp_path / "x"
    extra = ["--root", str(root), "--out", str(tmp_path / "out")] if argv[0] == "prepare" else ["--out", str(root)]
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_s3d_pickle_replaces_the_feature_stage(capsys, synthetic, tmp_path):
    """UniVL's S3D pickle (seconds x 1024 per video) becomes a store of the clips' windows, num_frames rows
    each, identical for the official json and UniVL's csv + pickle variant."""
    import numpy as np

    from meltr.features.store import FeatureStore

    root = synthetic["youcook2"]
    pickle = str(root / "youcookii_videos_features.pickle")
    stores = {}
    for variant in ("official", "univl"):
        prep = tmp_path / variant
        assert main(["prepare", "--dataset", "youcook2", "--task", "retrieval", "--root", str(root),
                     "--variant", variant, "--out", str(prep)]) == 0
        assert main(["features", "--manifests", str(prep / "train.jsonl"), str(prep / "test.jsonl"),
                     "--out", str(tmp_path / f"store_{variant}"), "--s3d", pickle, "--num-frames", "4"]) == 0
        stores[variant] = FeatureStore(tmp_path / f"store_{variant}")
    capsys.readouterr()
    a, b = stores["official"], stores["univl"]
    assert a.dim == 1024 and a.frames == 4
    ids = sorted(json.loads(line)["video_id"] for line in (tmp_path / "official/test.jsonl").read_text().splitlines())
    assert np.array_equal(a.get(ids), b.get(ids))
    # two segments of one video get different rows (the window is applied, not the whole video)
    first, second = ids[0], ids[1]
    assert first.rsplit("_", 1)[0] == second.rsplit("_", 1)[0] and not np.array_equal(a.get([first]), a.get([second]))


def test_synthetic_videos_decode_the_same_in_any_environment(tmp_path):
    """x264's lossy choices depended on the environment (OMP_NUM_THREADS): the same frames decoded to
    different pixels, and two clean runs on two machines disagreed. The synthetic mp4s are lossless."""
    import hashlib
    import os
    import subprocess
    import sys

    import av

    digests = []
    for threads in (None, "1"):
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        if threads:
            env["OMP_NUM_THREADS"] = threads
        out = tmp_path / f"omp{threads}"
        subprocess.run([sys.executable, "-m", "meltr", "synth", "--dataset", "msrvtt", "--out", str(out),
                        *SYNTH_ARGS["msrvtt"]], env=env, check=True, capture_output=True)
        h = hashlib.md5()
        for path in sorted((out / "videos").iterdir()):
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    h.update(frame.to_ndarray(format="rgb24").tobytes())
        digests.append(h.hexdigest())
    assert digests[0] == digests[1]


def test_a_test_clip_inside_the_training_list_is_refused_and_reported(synthetic, tmp_path, capsys):
    root = tmp_path / "msrvtt"
    shutil.copytree(synthetic["msrvtt"], root)
    train_list = root / "MSRVTT_train.9k.csv"
    first_test = (root / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[1].split(",")[2]
    train_list.write_text(train_list.read_text() + first_test + "\n")
    code, report, _ = run(capsys, "data", "check", "--dataset", "msrvtt", "--root", str(root))
    assert code == 0 and any("test clips also in train" in q and first_test in q for q in report["quirks"])
    code, _, err = run(capsys, "prepare", "--dataset", "msrvtt", "--root", str(root), "--out", str(tmp_path / "p"))
    assert code == 2 and "clips of the test split are also in train" in err and first_test in err
    assert not (tmp_path / "p").exists()


def test_a_duplicated_record_id_is_refused_and_reported(synthetic, tmp_path, capsys):
    root = tmp_path / "msrvtt"
    shutil.copytree(synthetic["msrvtt"], root)
    train_list = root / "MSRVTT_train.9k.csv"
    lines = train_list.read_text().splitlines()
    train_list.write_text("\n".join(lines + [lines[1]]) + "\n")  # the first training video listed twice
    code, report, _ = run(capsys, "data", "check", "--dataset", "msrvtt", "--root", str(root))
    assert code == 0 and any("duplicated record ids" in q for q in report["quirks"])
    code, _, err = run(capsys, "prepare", "--dataset", "msrvtt", "--root", str(root), "--out", str(tmp_path / "p"))
    assert code == 2 and "appears more than once" in err and lines[1] in err


def test_the_synthetic_datasets_have_no_quirks(synthetic, capsys):
    for name, root in synthetic.items():
        code, report, _ = run(capsys, "data", "check", "--dataset", name, "--root", str(root))
        assert code == 0 and report["quirks"] == [], name
