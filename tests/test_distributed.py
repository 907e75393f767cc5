"""`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) runs the same command.

On a machine without GPUs, accelerate starts several processes only through torchrun, which it
uses when given ``--multi_gpu`` (plain ``--num_processes 2`` or ``--cpu`` start one process
unless an MPI hostfile is configured). The process group then runs on gloo. The same holds
for several machines: ``--num_machines 2 --machine_rank R --main_process_ip/--main_process_port``
become torchrun's ``--nnodes 2 --node_rank R`` with a static rendezvous at that address, which
the two-machine test below starts twice on localhost.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_IMAGE_OVERRIDES


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_machines(launcher: str, args: list[str], root: Path, name: str) -> list[dict]:
    """Start ``jepactl pretrain ARGS`` as machine 0 and machine 1 (one process each) of one
    job on localhost, each in its own working folder; return each one's rc, stdout, stderr."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs, files = [], []
    for rank in (0, 1):
        (root / f"machine{rank}").mkdir(exist_ok=True)
        out = open(root / f"{name}-{rank}.out", "w+")
        err = open(root / f"{name}-{rank}.err", "w+")
        files.append((out, err))
        command = [launcher, "launch", "--multi_gpu", "--num_processes", "2"]
        command += ["--num_machines", "2", "--machine_rank", str(rank)]
        command += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
        command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        command += ["-m", "jepactl", "pretrain", *args]
        procs.append(
            subprocess.Popen(command, cwd=root / f"machine{rank}", env=env, stdout=out, stderr=err)
        )
    results = []
    try:
        for proc, (out, err) in zip(procs, files):
            rc = proc.wait(timeout=240)
            out.seek(0), err.seek(0)
            results.append({"rc": rc, "stdout": out.read(), "stderr": err.read()})
    finally:
        for proc, (out, err) in zip(procs, files):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close(), err.close()
    for rank, result in enumerate(results):
        assert result["rc"] == 0, f"machine {rank}: {result['stderr'][-2000:]}"
    return results


@pytest.mark.slow
def test_two_machines_of_one_process_train_resume_and_only_rank_0_writes(tmp_path):
    """Two "machines" (accelerate --num_machines 2 --machine_rank 0/1, one process each) on
    localhost: the job's command runs twice (first start, then a requeue that resumes)."""
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("accelerate launcher not installed")
    run = tmp_path / "shared" / "run"  # the same --out on both machines, as on a shared disk
    args = ["image/ijepa-cpu", "--out", str(run), "--resume-if-exists", "--json"]
    # Online probes at steps 2 and 4: only rank 0 scores, both ranks wait (this hung once).
    online = ["eval.every=2", "eval.fit_samples=64", "eval.score_samples=32"]
    args += [*TINY_IMAGE_OVERRIDES, "train.checkpoint_every=2", *online]
    first = launch_two_machines(launcher, [*args, "--max-steps", "2"], tmp_path, "first")
    second = launch_two_machines(launcher, [*args, "--max-steps", "4"], tmp_path, "second")

    for launch, steps, resumed in ((first, 2, False), (second, 4, True)):
        doc = json.loads(launch[0]["stdout"])  # rank 0 prints the one result document
        assert doc["results"]["step"] == steps and doc["results"]["finished"] is True
        assert doc["settings"]["resume"] is resumed
        assert f"step {steps}/{steps}" in launch[0]["stderr"]  # rank 0's progress lines
        assert launch[1]["stdout"] == ""  # rank 1 prints no result ...
        assert "[pretrain] step" not in launch[1]["stderr"]  # ... and no progress
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # one writer, no duplicated lines
    assert [r["step"] for r in records if "online_linear_accuracy" in r] == [2, 4]
    assert len(list((run / "logs").glob("pretrain-*.log"))) == 2  # one command log per launch
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2
    assert env["global_batch_size"] == 2 * env["micro_batch"]["batch_size"]
    from jepactl.checkpoint import load_latest_checkpoint

    state, _ = load_latest_checkpoint(run / "checkpoints")
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng"]) == 2
    # Rank 1 wrote nothing where it ran, and rank 0 nothing but the run folder.
    assert list((tmp_path / "machine1").iterdir()) == []
    assert list((tmp_path / "machine0").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["run"]
