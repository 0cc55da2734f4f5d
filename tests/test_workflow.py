"""End to end: the Snakemake workflow and `dvc repro` on a tiny configuration in a temporary copy."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tiny_params(all_families: bool = False, models: tuple[str, ...] = ("tiny",)) -> dict:
    """The default params.yaml, shrunk: MSRVTT retrieval only, or (all_families) one task of every family;
    the UniVL family's tiny model only, unless `models` says otherwise."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["grid"]["models"] = list(models)
    params["synth"]["msrvtt"].update(n_train=24, n_test=8, captions_per_video=2, seconds=2.0, size=32)
    params["synth"]["tgifqa"].update(n_train=12, n_test=6, size=32)
    params["train"].update(steps=9, batch_size=4, timing_warmup=3)
    params["features"].update(batch_size=8)
    for dataset in params["datasets"].values():  # the default per-task step counts are for the full run
        dataset.pop("train", None)
    params["scaling"].update(sizes=["micro", "tiny"], methods=["finetune", "meltr/finite_difference@current"],
                             ks=[2], batch_sizes=[2], rounds=1, warmup=2)
    params["cost"].update(rounds=1, warmup=2)
    if all_families:
        params["grid"]["datasets"] = ["msrvtt", "tgifqa"]
        params["datasets"]["msrvtt"]["tasks"] = ["retrieval", "captioning"]
        params["datasets"]["tgifqa"]["tasks"] = ["action", "frameqa", "count"]
    else:
        params["grid"]["datasets"] = ["msrvtt"]
        params["datasets"]["msrvtt"]["tasks"] = ["retrieval"]
    return params


def make_project(dest: Path, params: dict) -> Path:
    for name in ("Snakefile", "dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "meltr", dest / "meltr", ignore=shutil.ignore_patterns("__pycache__"))
    for sweep in params["scaling"].get("results", []):  # the committed GPU sweeps the report includes
        (dest / sweep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / sweep, dest / sweep)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny project after one full `snakemake --cores 2` run over every task family."""
    params = tiny_params(all_families=True)
    params["datasets"]["msrvtt"]["train"] = {"captioning": {"steps": 6}}  # a task's own train settings win
    params["datasets"]["tgifqa"]["task_features"] = {"frameqa": {"num_frames": 4, "frames_per_token": 1}}
    project = make_project(tmp_path_factory.mktemp("workflow"), params)
    sh("snakemake", "--cores", "2", cwd=project)
    return project


def test_workflow_writes_summary_report_and_metrics(finished):
    rows = list(csv.DictReader((finished / "results/summary.csv").open()))
    cells = [("msrvtt", "captioning"), ("msrvtt", "retrieval"), ("tgifqa", "action"), ("tgifqa", "count"),
             ("tgifqa", "frameqa")]
    assert [(r["dataset"], r["task"]) for r in rows] == [c for c in cells for _ in range(3)]
    assert [r["method"] for r in rows] == ["finetune", "multitask", "meltr"] * len(cells)
    for column in ("dataset", "task", "family", "method", "model", "params_m", "metric", "score", "baseline",
                   "R1", "R5", "R10", "MedR", "CIDEr", "samples_per_s", "step_ms", "peak_mem_mb", "meta_step_ms"):
        assert column in rows[0]
    assert all(float(r["samples_per_s"]) > 0 and r["score"] not in ("", "nan") for r in rows)
    assert rows[2]["meta_step_ms"] not in ("", "nan") and rows[0]["meta_step_ms"] in ("", "nan")
    report = (finished / "results/report/report.md").read_text()
    assert "meltr" in report and "quality_vs_throughput.png" in report
    # The cost ratios come from each task's cost job (one round here: marked unusable, never stated).
    costs = sorted(p.relative_to(finished).as_posix() for p in (finished / "results/cost").rglob("*.json"))
    assert "results/cost/msrvtt/retrieval/tiny.json" in costs and "results/cost/tgifqa/count/tiny.json" in costs
    assert "cost job, methods interleaved, 1 rounds" in report and "~~" in report
    for title in ("Text-to-video retrieval", "Captioning", "Multiple-choice QA", "Open-ended QA", "Count"):
        assert f"### {title}" in report, title
    caption = json.loads((finished / "results/runs/msrvtt/captioning/meltr/tiny/metrics.json").read_text())
    assert {"BLEU1", "BLEU4", "METEOR", "ROUGE_L", "CIDEr"} <= set(caption["beam"]) == set(caption["greedy"])
    assert (finished / "results/report/quality_vs_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((finished / "results/metrics.json").read_text())
    assert set(metrics["msrvtt"]["retrieval"]["tiny"]) == {"finetune", "multitask", "meltr"}
    log = [json.loads(line) for line in (finished / "results/runs/msrvtt/retrieval/meltr/tiny/train_log.jsonl").open()]
    assert sum(e["meta"] for e in log) == 3  # steps 3, 6, 9 with k = 3
    caption_log = (finished / "results/runs/msrvtt/captioning/meltr/tiny/train_log.jsonl").read_text().splitlines()
    assert len(caption_log) == 6  # datasets.msrvtt.train.captioning.steps over train.steps
    assert set(log[0]["weights"]) == {"joint", "align", "cmlm", "cmfm", "m_joint", "m_align", "decoder", "m_decoder"}
    qa_log = [json.loads(line) for line in (finished / "results/runs/tgifqa/count/meltr/tiny/train_log.jsonl").open()]
    assert set(qa_log[0]["weights"]) == {"count", "align", "cmlm", "cmfm"}
    for stage in ("synth", "prepare", "features", "report"):
        assert list((finished / "logs").glob(f"{stage}*")), stage
    assert (finished / "benchmarks/train/msrvtt.retrieval.meltr.tiny.tsv").exists()


def test_a_task_with_its_own_feature_settings_gets_its_own_store(finished):
    def store(name):
        index = json.loads((finished / "results/features" / name / "index.json").read_text())
        return index["num_frames"], index["frames_per_token"], set(index["video_ids"])

    def videos(task):
        return {json.loads(line)["video_id"] for split in ("train", "test")
                for line in (finished / f"results/prepared/tgifqa/{task}/{split}.jsonl").open()}

    frames, per_token, own = store("tgifqa.frameqa")
    assert (frames, per_token) == (4, 1) and own == videos("frameqa")
    frames, per_token, shared = store("tgifqa")  # the dataset's settings, for the other tasks only
    assert (frames, per_token) == (24, 3) and shared == videos("action") | videos("count")
    # each task trained on its store: 4 single frames are narrower tokens than 24 stacked by 3
    def trained_dim(task):
        return torch.load(finished / f"results/runs/tgifqa/{task}/finetune/tiny/model.pt", weights_only=False)["feature_dim"]

    def store_dim(name):
        return np.load(finished / "results/features" / name / "features.npy", mmap_mode="r").shape[-1]

    assert trained_dim("frameqa") == store_dim("tgifqa.frameqa") == store_dim("tgifqa") // 3
    assert trained_dim("action") == store_dim("tgifqa")


def test_workflow_sweeps_sizes_and_reports_them_beside_the_committed_gpu_sweeps(finished):
    local = json.loads((finished / "results/scaling/local.json").read_text())
    assert {(p["size"], p["method"]) for p in local["points"]} == {
        (s, m) for s in ("micro", "tiny") for m in ("finetune", "meltr/finite_difference@current")}
    rows = list(csv.DictReader((finished / "results/scaling/scaling.csv").open()))
    devices = {r["device"] for r in rows}
    assert local["device"] in devices and "NVIDIA H100 80GB HBM3" in devices
    report = (finished / "results/report/report.md").read_text()
    assert "## Scaling: MELTR's cost as the model grows" in report and "### Fitted slopes" in report
    assert "NVIDIA H100 80GB HBM3" in report and "scaling_ratio_multitask.png" in report
    slopes = list(csv.DictReader((finished / "results/scaling/slopes.csv").open()))
    local_meltr = [r for r in slopes if r["device"] == local["device"] and r["method"].startswith("meltr")]
    assert local_meltr and local_meltr[0]["sizes"] == "2" and local_meltr[0]["ratio_vs_finetune_per_decade"]
    for name in ("throughput", "memory", "ratio_multitask", "ratio_finetune"):
        assert (finished / f"results/report/scaling_{name}.png").read_bytes()[:4] == b"\x89PNG"


def _dry_run_after_editing(project: Path, module: str) -> str:
    path = project / module
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        return sh("snakemake", "-n", cwd=project).stdout
    finally:
        path.write_text(original)


def test_nothing_to_do_after_a_run_and_code_edits_rerun_exactly_their_jobs(finished):
    assert "Nothing to be done" in sh("snakemake", "-n", cwd=finished).stdout
    # rng.py is imported by the trainer (dropout masks come from rng.seeded), never named by a rule: the
    # rules' code inputs are derived from the imports (workflow/rules/common.smk: code).
    dry = _dry_run_after_editing(finished, "meltr/rng.py")
    assert "rule train" in dry and "rule evaluate" in dry and "rule features" not in dry and "rule synth" not in dry
    # A report-only module reruns the report and nothing else.
    dry = _dry_run_after_editing(finished, "meltr/report/render.py")
    assert "rule report" in dry and "rule train" not in dry and "rule evaluate" not in dry
    assert "Nothing to be done" in sh("snakemake", "-n", cwd=finished).stdout


def _jobs(dry_run: str) -> dict[str, int]:
    """Snakemake's job-stats table of a dry run: rule -> count."""
    table = dry_run.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if line.strip()}


def test_the_default_run_trains_one_task_per_dataset_on_both_families_and_the_full_grid_is_one_command():
    default = _jobs(sh("snakemake", "-n", "--forceall", "--cores", "1", cwd=ROOT).stdout)
    full = _jobs(sh("snakemake", "-n", "--forceall", "--cores", "1", "--configfile", "workflow/grids/full.yaml",
                    cwd=ROOT).stdout)
    # four tasks x three methods x two models (tiny and vllm-tiny); the full grid all ten tasks (MSVD-QA's too)
    assert default["train"] == 4 * 3 * 2 and default["cost"] == 4 * 2 and default["synth"] == 4
    assert full["train"] == 10 * 3 * 2 and full["evaluate"] == 10 * 3 * 2 and full["cost"] == 10 * 2
    assert full["synth"] == 5


def test_snakemake_lint_has_nothing_but_the_conda_container_advice():
    proc = subprocess.run(["snakemake", "--lint", "--cores", "1"], cwd=ROOT, capture_output=True, text=True)
    lints = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("    * ")]
    assert lints, proc.stdout + proc.stderr  # the linter ran and its format is the one parsed here
    assert [x for x in lints if not x.startswith("* Specify a conda environment or container")] == []


def test_invalid_params_are_rejected_before_any_job(tmp_path):
    params = tiny_params()
    params["grid"]["methods"] = ["finetune", "bogus"]
    project = make_project(tmp_path, params)
    proc = sh("snakemake", "-n", cwd=project, check=False)
    assert proc.returncode != 0
    assert "bogus" in proc.stdout + proc.stderr
    params = tiny_params()
    params["datasets"]["tgifqa"]["task_features"] = {"transitoin": {"num_frames": 8}}  # not a TGIF-QA task
    (tmp_path / "typo").mkdir()
    proc = sh("snakemake", "-n", cwd=make_project(tmp_path / "typo", params), check=False)
    assert proc.returncode != 0
    assert "transitoin" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny project (MSRVTT retrieval, both model families) in git with a local DVC remote, after `dvc repro`."""
    root = tmp_path_factory.mktemp("dvc")
    (root / "project").mkdir()
    project = make_project(root / "project", tiny_params(models=("tiny", "vllm-tiny")))
    remote = root / "remote"
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.autostage", "true"], ["dvc", "remote", "add", "-d", "local", str(remote)],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        sh(*cmd, cwd=project)
    sh("dvc", "repro", cwd=project)
    return project, remote


def test_dvc_repro_then_status_clean(reproduced):
    project, _ = reproduced
    assert "up to date" in sh("dvc", "status", cwd=project).stdout
    assert "Nothing to be done" in sh("snakemake", "-n", cwd=project).stdout
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=project).stdout)
    assert "results/metrics.json" in json.dumps(shown)
    assert "didn't change" in sh("dvc", "repro", cwd=project).stdout
    # Both model families trained and evaluated, and the report has their rows.
    metrics = json.loads((project / "results/metrics.json").read_text())["msrvtt"]["retrieval"]
    assert set(metrics) == {"tiny", "vllm-tiny"} and set(metrics["vllm-tiny"]) == {"finetune", "multitask", "meltr"}
    report = (project / "results/report/report.md").read_text()
    assert "| msrvtt | retrieval | vllm-tiny |" in report
    log = [json.loads(x) for x in (project / "results/runs/msrvtt/retrieval/meltr/vllm-tiny/train_log.jsonl").open()]
    assert set(log[0]["weights"]) == {"vtc", "lm", "vtm", "mvm", "m_lm"}


def test_dvc_push_clone_pull_touch_and_an_experiment(reproduced, tmp_path):
    """A colleague's clone: dvc push to a local remote, git clone, dvc pull, snakemake --touch; then nothing is
    left to compute. And `dvc exp run -S` on a MELTR parameter makes an experiment that `dvc exp show` lists."""
    project, remote = reproduced
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-qm", "results", cwd=project)
    sh("dvc", "push", cwd=project)
    assert any(remote.rglob("*"))

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(project), str(clone), cwd=tmp_path)
    assert not (clone / "results/runs").exists()
    sh("dvc", "pull", cwd=clone)
    assert (clone / "results/runs/msrvtt/retrieval/meltr/tiny/model.pt").is_file()
    sh("snakemake", "--touch", "--cores", "1", cwd=clone)
    assert "Nothing to be done" in sh("snakemake", "-n", cwd=clone).stdout
    assert "up to date" in sh("dvc", "status", cwd=clone).stdout

    sh("dvc", "exp", "run", "-S", "meltr.k=2", "-n", "k2", cwd=clone)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=clone).stdout)
    text = json.dumps(shown)
    assert '"k2"' in text and "results/metrics.json" in text
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    runs = [r for e in exps for r in (e.get("revs") or [])]
    k2 = [r for r in runs if r.get("name") == "k2"]
    assert k2 and k2[0]["data"]["params"]["params.yaml"]["data"]["meltr"]["k"] == 2
    assert k2[0]["data"]["metrics"]["results/metrics.json"]["data"]["msrvtt"]["retrieval"]["tiny"]["meltr"]["score"] \
        is not None


def test_rerun_after_a_killed_training_job_resumes_it(tmp_path):
    """Kill Snakemake (and its training job) once a checkpoint exists; the rerun resumes that job from the
    checkpoint instead of starting it over."""
    import os
    import signal
    import time

    params = tiny_params()
    params["grid"]["methods"] = ["multitask"]
    params["train"].update(steps=300, checkpoint_every=5)
    project = make_project(tmp_path, params)
    run_dir = project / "results/runs/msrvtt/retrieval/multitask/tiny"
    target = str((run_dir / "model.pt").relative_to(project))  # the training job and what it needs, nothing else
    proc = subprocess.Popen(["snakemake", "--cores", "2", target], cwd=project, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and the job it started, as a lost node would
    proc.wait()
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "model.pt").exists()
    # What a user does after a lost node: release the killed run's lock, rerun the incomplete job.
    sh("snakemake", "--unlock", "--cores", "1", cwd=project)
    sh("snakemake", "--cores", "2", "--rerun-incomplete", target, cwd=project)
    resumed = json.loads((run_dir / "throughput.json").read_text())["resumed_from"]
    assert resumed and 0 < resumed[0] < 300 and resumed[0] % 5 == 0


def test_two_clean_runs_give_identical_results(reproduced, tmp_path):
    """Same seed, same params.yaml, two fresh project folders, one run by `dvc repro` and one by Snakemake: the
    same feature store bytes, the same quality columns in summary.csv and bitwise the same weights, for both
    model families (training and evaluation are deterministic on CPU)."""
    first, _ = reproduced
    second = make_project(tmp_path, tiny_params(models=("tiny", "vllm-tiny")))
    sh("snakemake", "--cores", "all", cwd=second)  # as dvc.yaml's stage runs it
    runs = [first, second]
    a, b = (np.load(p / "results/features/msrvtt/features.npy") for p in runs)
    assert np.array_equal(a, b)
    quality = ("dataset", "task", "method", "model", "score", "R1", "R5", "R10", "MedR", "MeanR", "v2t_R1")
    rows = [[{k: r[k] for k in quality} for r in csv.DictReader((p / "results/summary.csv").open())] for p in runs]
    assert rows[0] == rows[1] and len(rows[0]) == 6

    for model in ("tiny", "vllm-tiny"):
        for method in ("finetune", "multitask", "meltr"):  # bitwise, not just equal metrics
            ma, mb = (torch.load(p / f"results/runs/msrvtt/retrieval/{method}/{model}/model.pt",
                                 weights_only=False)["model"] for p in runs)
            assert all(torch.equal(ma[k], mb[k]) for k in ma), (model, method)
