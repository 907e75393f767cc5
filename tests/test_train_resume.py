"""The trainer: exact resume, atomic checkpoints, metrics, and preemption by signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.checkpoint import load_latest_checkpoint
from jepactl.recipe import load_recipe
from jepactl.runs import CHECKPOINT_DIR
from jepactl.train import StopFlag, pretrain


def losses(run_dir):
    return [
        json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def tiny(max_steps, extra=()):
    return load_recipe(
        "image/ijepa-cpu",
        [*TINY_IMAGE_OVERRIDES, f"train.max_steps={max_steps}", "train.checkpoint_every=3", *extra],
    )


@pytest.mark.slow
def test_resume_continues_the_same_loss_curve(tmp_path):
    straight = tmp_path / "straight"
    pretrain(tiny(8), straight, quiet=True)

    split = tmp_path / "split"
    first = pretrain(tiny(8, ["train.checkpoint_every=4"]), split, quiet=True, stop_after=4)
    assert first.step == 4 and not first.finished
    second = pretrain(tiny(8, ["train.checkpoint_every=4"]), split, resume=True, quiet=True)
    assert second.step == 8 and second.finished
    assert losses(split) == pytest.approx(losses(straight), abs=0, rel=0)
    assert len(losses(split)) == 8


@pytest.mark.slow
def test_grad_accumulation_steps_schedules_per_optimizer_step(tmp_path):
    run = tmp_path / "accum"
    recipe = tiny(4, ["train.grad_accum=2", "train.batch_size=4"])
    pretrain(recipe, run, quiet=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # warmup_steps=2: lr reaches the peak at optimizer step 2, whatever the accumulation.
    assert records[0]["lr"] == pytest.approx(recipe.optim.start_lr)
    assert records[2]["lr"] == pytest.approx(recipe.optim.lr)
    assert records[0]["momentum"] == pytest.approx(0.996)


@pytest.mark.slow
def test_metrics_hold_schedules_throughput_and_collapse_monitors(tmp_path):
    run = tmp_path / "m"
    pretrain(tiny(3), run, quiet=True)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in (
        "loss",
        "lr",
        "weight_decay",
        "momentum",
        "samples_per_s",
        "data_wait_fraction",
        "embed_std",
        "effective_rank",
    ):
        assert key in record, key
    assert 0 <= record["data_wait_fraction"] <= 1
    assert 1.0 <= record["effective_rank"] <= 32
    assert (run / "recipe.yaml").is_file() and (run / "env.json").is_file()
    reproduced = load_recipe(str(run / "recipe.yaml"))
    assert reproduced.train.max_steps == 3 and reproduced.model.embed_dim == 32


@pytest.mark.slow
def test_existing_run_without_resume_is_refused(tmp_path):
    from jepactl.errors import UserError

    pretrain(tiny(2), tmp_path / "r", quiet=True)
    with pytest.raises(UserError, match="--resume"):
        pretrain(tiny(2), tmp_path / "r", quiet=True)


def _start_tiny_run(run, steps=400, model=TINY_IMAGE_OVERRIDES, logged=2):
    """Start `jepactl pretrain` in its own process group; return once it logged ``logged``
    steps."""
    overrides = [
        *model,
        f"train.max_steps={steps}",
        "train.checkpoint_every=1000",
        "train.num_workers=1",
        "train.log_every=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jepactl",
            "pretrain",
            "image/ijepa-cpu",
            "--out",
            str(run),
            "--quiet",
            *overrides,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        metrics.exists() and metrics.read_text().count("\n") >= logged
    ):
        time.sleep(0.2)
    return proc


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_zero_then_resume_finishes(tmp_path):
    """The scheduler signals the whole process group, DataLoader workers included."""
    run = tmp_path / "pre"
    proc = _start_tiny_run(run, logged=3)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    stopped = load_latest_checkpoint(run / CHECKPOINT_DIR)[0]["step"]
    assert 3 <= stopped < 400
    before = losses(run)
    assert len(before) == stopped
    resumed = pretrain(
        load_recipe(
            str(run / "recipe.yaml"), ["train.max_steps=" + str(stopped + 3), "train.num_workers=0"]
        ),
        run,
        resume=True,
        quiet=True,
    )
    assert resumed.step == stopped + 3
    after = losses(run)
    assert after[:stopped] == before and len(after) == stopped + 3


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_like_sigterm(tmp_path):
    run = tmp_path / "int"
    proc = _start_tiny_run(run)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the loader workers too
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert "interrupted: saving a checkpoint" in err.decode()
    state, _ = load_latest_checkpoint(run / CHECKPOINT_DIR)
    assert 2 <= state["step"] < 400 and len(losses(run)) == state["step"]
    assert not (run / ".lock").exists()


def test_a_forked_loader_worker_ignores_the_inherited_stop_handler(capsys):
    """A worker forked at an epoch boundary runs the parent's handler until its init ignores
    signals; had it printed, the user (and a test) would see an interrupt the trainer never saw."""
    flag = StopFlag()
    flag.owner_pid = os.getpid() + 1  # as seen from inside a forked worker
    flag._handle(signal.SIGINT, None)
    flag._handle(signal.SIGINT, None)  # and no KeyboardInterrupt either
    assert not flag.raised and capsys.readouterr().err == ""
    flag.owner_pid = os.getpid()
    flag._handle(signal.SIGINT, None)
    assert flag.raised and "interrupted" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        flag._handle(signal.SIGINT, None)


def test_a_second_ctrl_c_during_the_first_ones_message_still_quits(monkeypatch):
    """Python runs a handler again, nested, for a signal that lands while the first one runs."""
    flag = StopFlag()
    nested = []

    class Stderr:
        def write(self, text):
            if not nested:
                nested.append(True)
                flag._handle(signal.SIGINT, None)  # the second Ctrl-C, mid-write

    monkeypatch.setattr(sys, "stderr", Stderr())
    with pytest.raises(KeyboardInterrupt):
        flag._handle(signal.SIGINT, None)


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once_and_releases_the_run(tmp_path):
    run = tmp_path / "int2"
    # image/ijepa-cpu's own model: steps of about a second, so both signals land in one step.
    proc = _start_tiny_run(run, steps=100000, model=["train.batch_size=32", "mask.min_keep=2"])
    os.killpg(proc.pid, signal.SIGINT)
    # Send the second Ctrl-C once the first was handled: Python runs a signal's handler once
    # for any number of deliveries that arrive while one long torch call holds the main thread.
    seen = b""
    deadline = time.monotonic() + 60
    while b"interrupted" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = seen + rest
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, caplog):
    run = tmp_path / "torn"
    pretrain(tiny(4, ["train.checkpoint_every=2"]), run, quiet=True, stop_after=2)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 3, "loss": 0.12')  # the process died mid-write
    pretrain(tiny(4, ["train.checkpoint_every=2"]), run, resume=True, quiet=True)
    assert [
        json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2, 3, 4]
    assert "torn last line" in caplog.text


@pytest.mark.slow
def test_a_damaged_metrics_line_before_the_last_is_an_error_naming_it(tmp_path):
    from jepactl.errors import UserError

    run = tmp_path / "bad"
    pretrain(tiny(4, ["train.checkpoint_every=2"]), run, quiet=True, stop_after=2)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("garbage\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(UserError, match="metrics.jsonl' line 1 is not JSON"):
        pretrain(tiny(4, ["train.checkpoint_every=2"]), run, resume=True, quiet=True)
