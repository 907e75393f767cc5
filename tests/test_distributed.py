"""`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) runs the same command.

On a machine without GPUs, accelerate starts several processes only through torchrun, which it
uses when given ``--multi_gpu`` (plain ``--num_processes 2`` or ``--cpu`` start one process
unless an MPI hostfile is configured). The process group then runs on gloo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_IMAGE_OVERRIDES


@pytest.mark.slow
def test_two_process_cpu_run_trains_checkpoints_and_resumes(tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("accelerate launcher not installed")
    run = tmp_path / "ddp"
    base = [
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "jepactl",
        "pretrain",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*TINY_IMAGE_OVERRIDES, "train.checkpoint_every=2", "--quiet"]
    subprocess.run(
        [*base, "image/ijepa-cpu", "--out", str(run), "--max-steps", "2", *args],
        check=True,
        env=env,
        capture_output=True,
        timeout=240,
    )
    subprocess.run(
        [*base, str(run), "--resume", "--max-steps", "4", *args[:-1], "--quiet"],
        check=True,
        env=env,
        capture_output=True,
        timeout=240,
    )
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # one writer, no duplicated lines
    assert json.loads((run / "env.json").read_text())["world_size"] == 2
    from jepactl.checkpoint import load_latest_checkpoint

    state, _ = load_latest_checkpoint(run / "checkpoints")
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng"]) == 2
