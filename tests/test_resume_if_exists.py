"""`--resume-if-exists`: one command line for a job's first start and every requeue."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.cli import app


def pretrain(run, steps, *extra):
    args = ["pretrain", "image/ijepa-cpu", *TINY_IMAGE_OVERRIDES, "train.log_every=1", *extra]
    args += ["train.checkpoint_every=2", "--out", str(run), "--max-steps", str(steps), "--quiet"]
    return CliRunner().invoke(app, [*args, "--resume-if-exists"])


def losses(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.slow
def test_the_same_line_starts_then_resumes_exactly(tmp_path):
    from jepactl.recipe import load_recipe
    from jepactl.train import pretrain as train

    straight = tmp_path / "straight"
    assert pretrain(straight, 4).exit_code == 0  # no run yet: a fresh start
    requeued = tmp_path / "requeued"
    overrides = [*TINY_IMAGE_OVERRIDES, "train.log_every=1", "train.checkpoint_every=2"]
    recipe = load_recipe("image/ijepa-cpu", [*overrides, "train.max_steps=4"])
    train(recipe, requeued, quiet=True, stop_after=2)  # preempted after step 2, as by SIGUSR1
    again = pretrain(requeued, 4)  # the requeued job runs the very same line
    assert again.exit_code == 0, again.output
    assert losses(requeued) == losses(straight)


@pytest.mark.slow
def test_a_recipe_that_changes_the_model_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    assert pretrain(run, 2).exit_code == 0
    changed = pretrain(run, 4, "model.depth=1")
    assert changed.exit_code == 2
    lines = [line for line in changed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.depth" in lines[0] and "cannot resume" in lines[0]
    logging_only = pretrain(run, 4, "train.log_every=2")  # how it logs may change
    assert logging_only.exit_code == 0, logging_only.output


def test_resume_and_resume_if_exists_together_are_refused(tmp_path):
    done = CliRunner().invoke(
        app,
        ["pretrain", "image/ijepa-cpu", "--out", str(tmp_path), "--resume", "--resume-if-exists"],
    )
    assert done.exit_code == 2 and "not both" in done.stderr


def test_env_json_names_the_slurm_job_that_wrote_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    run = tmp_path / "run"
    assert pretrain(run, 1).exit_code == 0
    slurm = json.loads((run / "env.json").read_text())["slurm"]
    assert slurm["SLURM_JOB_ID"] == "4242" and slurm["SLURM_RESTART_COUNT"] == "1"
    assert "SLURM_ARRAY_TASK_ID" not in slurm
