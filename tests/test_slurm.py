"""The SLURM profile (workflow/profiles/slurm): a real run on a one-node test cluster, and the sbatch lines of
the GPU rules, captured with a fake sbatch (there is no GPU here)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import cluster, missing_binaries
from test_workflow import make_project, tiny_params

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "workflow/profiles/slurm"
QUALITY = ("score", "R1", "R5", "R10", "MedR")
METHODS = ("finetune", "multitask", "meltr")


def _env(**extra: str) -> dict:
    """The environment without any SLURM job or client variables, with this interpreter's scripts (snakemake,
    meltr) first on PATH: SLURM jobs inherit it (--export=ALL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    # subprocess.run kills with SIGKILL on timeout: Snakemake waiting for cluster jobs ignores SIGTERM.
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def _quality(project: Path) -> list[dict]:
    rows = list(csv.DictReader((project / "results/summary.csv").open()))
    return [{k: r[k] for k in ("dataset", "task", "method", "model") + QUALITY} for r in rows]


def _losses(project: Path, method: str) -> list:
    log = project / f"results/runs/msrvtt/retrieval/{method}/tiny/train_log.jsonl"
    return [(e["step"], e["loss"], e["losses"]) for e in map(json.loads, log.read_text().splitlines())]


def _finish(proc: subprocess.Popen, out: Path, deadline: float, what: str) -> str:
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGKILL: Snakemake waiting for cluster jobs ignores SIGTERM
        proc.wait()
    log = out.read_text(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}):\n{log[-8000:]}")
    return log


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_binaries()), reason=f"SLURM/munge/MariaDB not installed: {missing_binaries()}")
def test_profile_runs_the_workflow_on_a_real_slurm_cluster(tmp_path):
    """Submit-run-collect through sbatch, slurmd and sacct; the results equal a local run's."""
    (tmp_path / "local").mkdir()
    (tmp_path / "slurm").mkdir()
    local = make_project(tmp_path / "local", tiny_params())
    project = make_project(tmp_path / "slurm", tiny_params())
    deadline = time.monotonic() + 900
    procs = []
    with cluster(cpus=2, memory_mb=4000) as c:
        try:
            # The cluster has a partition `cpu`, no GPU and 2 CPUs. The command line replaces the profile's whole
            # default-resources/set-resources/set-threads blocks: the GPU rules get gpu=0 (-> --cpus-per-task), and
            # train/features the threads of the local run below (train.threads 1, features every core), so that
            # training (seeded, on CPU) computes the same numbers.
            cmd = ["snakemake", "--profile", PROFILE,
                   "--default-resources", f"slurm_partition={c.partition}", f"slurm_account={c.account}",
                   "runtime=10", "mem_mb=500", "cpus_per_task=threads",
                   "--set-resources", "train:gpu=0", "evaluate:gpu=0", "scaling:gpu=0", "cost:gpu=0",
                   "--set-threads", "train=1", "features=2", "scaling=2", "cost=2",
                   # Poll sacct every second while nothing runs (the plugin adds 10 s per poll while jobs run).
                   "--slurm-init-seconds-before-status-checks", "1",
                   "--slurm-keep-successful-logs", "--latency-wait", "10"]
            slurm_out, local_out = tmp_path / "slurm.log", tmp_path / "local.log"
            with slurm_out.open("w") as out:
                procs.append(subprocess.Popen(cmd, cwd=project, env=c.environ(_env()), stdout=out,
                                              stderr=subprocess.STDOUT, text=True))
            # The local reference run starts from the videos the SLURM synth job wrote, as soon as it has completed:
            # libx264 does not write the same bytes in every environment (same frames, a different
            # OMP_NUM_THREADS: another mp4), so a separate `meltr synth` would give other features and scores.
            synth_done = "rule_synth_wildcards_msrvtt|COMPLETED"  # a fresh cluster: only this run's jobs
            while synth_done not in c.run("sacct", "-X", "-n", "-P", "--format=Comment,State").stdout.split():
                if procs[0].poll() is not None or time.monotonic() > deadline:
                    _finish(procs[0], slurm_out, deadline, "snakemake --profile workflow/profiles/slurm")
                    raise AssertionError(f"no completed synth job\n{slurm_out.read_text()[-8000:]}")
                time.sleep(1)
            shutil.copytree(project / "data", local / "data")
            with local_out.open("w") as out:
                procs.append(subprocess.Popen(["snakemake", "--cores", "2"], cwd=local, env=_env(), stdout=out,
                                              stderr=subprocess.STDOUT, text=True))
            log = _finish(procs[0], slurm_out, deadline, "snakemake --profile workflow/profiles/slurm")
            run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
            job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
            accounting = c.run("sacct", "-X", "-n", "-P",
                               "--format=JobIDRaw,JobName,State,Comment,Account,Partition", "-j",
                               ",".join(job_ids)).stdout
            local_log = _finish(procs[1], local_out, deadline, "snakemake --cores 2 (local reference)")
        finally:  # before the cluster goes: no Snakemake left waiting on it
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    # (a) Every job of the workflow ran as a SLURM job of this run, and completed.
    jobs = [line.split("|") for line in accounting.splitlines() if line.strip()]
    expected = sorted(["rule_synth_wildcards_msrvtt", "rule_prepare_wildcards_msrvtt_retrieval",
                       "rule_features_wildcards_msrvtt", "rule_scaling", "rule_report",
                       "rule_cost_wildcards_msrvtt_retrieval_tiny"]
                      + [f"rule_{rule}_wildcards_msrvtt_retrieval_{m}_tiny" for rule in ("train", "evaluate")
                         for m in METHODS])
    assert sorted(j[3] for j in jobs) == expected, accounting
    assert sorted(j[0] for j in jobs) == sorted(job_ids)
    assert all(j[1] == run_id and j[2] == "COMPLETED" and j[4] == c.account and j[5] == c.partition
               for j in jobs), accounting
    for job_id in job_ids:  # each job's SLURM output, kept by --slurm-keep-successful-logs
        assert list((project / ".snakemake/slurm_logs").glob(f"rule_*/**/{job_id}.log")), job_id
    for m in METHODS:
        assert (project / f"results/runs/msrvtt/retrieval/{m}/tiny/metrics.json").is_file()
    assert "rule synth:" not in local_log  # the reference used the SLURM job's videos

    # (b) The same results as the local run: quality columns, every metric, every step's losses.
    assert [r["method"] for r in _quality(project)] == list(METHODS)
    assert _quality(project) == _quality(local)
    for m in METHODS:
        run = f"results/runs/msrvtt/retrieval/{m}/tiny"
        assert json.loads((project / run / "metrics.json").read_text()) == \
            json.loads((local / run / "metrics.json").read_text()), m
        assert _losses(project, m) == _losses(local, m), m


FAKE_SBATCH = """#!{python}
# Records its arguments, answers like `sbatch --parsable`: the job id.
import json, os, sys
with open({calls!r}, "a") as f:
    f.write(json.dumps({{"id": str(os.getpid()), "argv": sys.argv[1:]}}) + "\\n")
print(os.getpid())
"""
FAKE_SACCT = """#!{python}
# The plugin's status query (--name <run id>): every submitted job has FAILED, so Snakemake stops at once.
# Other queries (account guess, failure reasons) get no lines.
import json, os, sys
if "--name" in sys.argv and os.path.exists({calls!r}):
    for line in open({calls!r}):
        print(json.loads(line)["id"] + "|FAILED")
"""


def _options(argv: list[str]) -> dict:
    """sbatch arguments as {option: value}: `--mem 32000`, `-p gpu` and `--gpus=1` alike; flags map to True."""
    takes_value = {"-p", "-t", "-A", "-D", "-C", "--mem", "--mem-per-cpu", "--job-name", "--output", "--comment"}
    options, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            options[key] = value
        elif arg in takes_value:
            options[arg] = argv[i + 1]
            i += 1
        else:
            options[arg] = True
        i += 1
    return options


def test_profile_requests_gpus_for_train_evaluate_and_scaling_only(tmp_path):
    """With a fake sbatch first on PATH: the sbatch lines of a train, an evaluate, a scaling and a synth job."""
    params = tiny_params(all_families=True)  # msrvtt and tgifqa: tgifqa's synth is the CPU job
    params["datasets"]["msrvtt"]["tasks"] = ["retrieval"]
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project", params)
    # Stand-ins for what train (finetune) and evaluate (multitask) need, newer than the code they come from.
    run = "results/runs/msrvtt/retrieval/multitask/tiny"
    stand_ins = ["data/synth/msrvtt/MSRVTT_data.json", "results/prepared/msrvtt/retrieval/train.jsonl",
                 "results/prepared/msrvtt/retrieval/test.jsonl", "results/prepared/msrvtt/retrieval/summary.json",
                 "results/features/msrvtt/features.npy", f"{run}/model.pt", f"{run}/train_log.jsonl",
                 f"{run}/throughput.json"]
    newest = max(p.stat().st_mtime for p in project.rglob("*") if p.is_file())
    for n, name in enumerate(stand_ins, start=1):
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
        for p in (path, path.parent):
            os.utime(p, (newest + n, newest + n))

    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch_calls.jsonl"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "sacct": FAKE_SACCT}.items():
        (bin_dir / name).write_text(text.format(python=sys.executable, calls=str(calls)))
    for name in ("sinfo", "squeue", "scontrol", "scancel", "sacctmgr", "sshare", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = _env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    targets = ["results/runs/msrvtt/retrieval/finetune/tiny/model.pt", f"{run}/metrics.json", "data/synth/tgifqa",
               "results/scaling/local.json"]
    dry = _run(["snakemake", "--profile", PROFILE, "-n", *targets], project, env, timeout=120).stdout
    assert sorted(re.findall(r"^rule (\w+):", dry, re.M)) == ["evaluate", "scaling", "synth", "train"], dry
    proc = _run(["snakemake", "--profile", PROFILE, "--retries", "0", "--slurm-init-seconds-before-status-checks", "1",
                 *targets], project, env, timeout=180, check=False)
    assert proc.returncode != 0  # the fake sacct fails every job
    submitted = [json.loads(line)["argv"] for line in calls.read_text().splitlines()]
    by_comment = {_options(argv)["--comment"]: _options(argv) for argv in submitted}
    assert sorted(by_comment) == ["rule_evaluate_wildcards_msrvtt_retrieval_multitask_tiny", "rule_scaling",
                                  "rule_synth_wildcards_tgifqa",
                                  "rule_train_wildcards_msrvtt_retrieval_finetune_tiny"], proc.stderr[-4000:]

    profile = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    default, threads = profile["default-resources"], profile["set-threads"]
    assert profile["executor"] == "slurm"
    for rule in ("train", "evaluate", "scaling"):
        res = profile["set-resources"][rule]
        line = by_comment[next(k for k in by_comment if k == f"rule_{rule}" or k.startswith(f"rule_{rule}_"))]
        assert res["gpu"] >= 1 and line["--gpus"] == str(res["gpu"]), line
        assert "gpu" in res["slurm_partition"] and line["-p"] == res["slurm_partition"], line
        assert line["-t"] == str(res["runtime"]) and line["--mem"] == str(res["mem_mb"]), line
        assert line["--cpus-per-gpu"] == str(res["cpus_per_gpu"]) and "--cpus-per-task" not in line, line
        assert "--gres" not in line and "--ntasks" not in line, line
    train = profile["set-resources"]["train"]
    assert train["gpu"] * train["cpus_per_gpu"] >= threads["train"]  # a CPU for every training thread
    synth = by_comment["rule_synth_wildcards_tgifqa"]
    assert synth["-p"] == default["slurm_partition"] and "gpu" not in synth["-p"], synth
    assert synth["-t"] == str(default["runtime"]) and synth["--mem"] == str(default["mem_mb"]), synth
    assert synth["--cpus-per-task"] == "1" and synth["--ntasks"] == "1", synth
    assert not any(k.startswith(("--gpus", "--gres", "--cpus-per-gpu")) for k in synth), synth
    for line in by_comment.values():  # every job re-runs Snakemake on the node with the slurm-jobstep executor
        assert "--executor slurm-jobstep" in line["--wrap"] and line["--export"] == "ALL", line
