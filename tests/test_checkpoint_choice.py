"""``--checkpoint``: best.safetensors beside the step-N files, and last / best / a step number
chosen by probe, embed and export (checkpoint.load_checkpoint_choice)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.checkpoint import (
    BEST_NAME,
    checkpoint_name,
    find_checkpoints,
    load_checkpoint_choice,
    load_latest_checkpoint,
    read_checkpoint,
    save_best_checkpoint,
    save_checkpoint,
)
from jepactl.cli import app
from jepactl.errors import UserError
from jepactl.evaluate.source import open_encoder, open_method
from jepactl.export import clean_state_dict
from jepactl.methods.probe_request import ProbeRequest
from jepactl.recipe import load_recipe
from jepactl.runs import load_trained_method, read_run_recipe
from jepactl.train import pretrain

NO_BEST = (
    "run has no best checkpoint (runs of jepactl 0.2.0 and earlier keep none); "
    "use --checkpoint last or a step number"
)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 4-step run with step-2 and step-4 checkpoints, and best.safetensors = step 2's state."""
    run = tmp_path_factory.mktemp("run") / "r"
    overrides = [
        *TINY_IMAGE_OVERRIDES,
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "checkpoint.keep=5",
    ]
    pretrain(load_recipe("image/ijepa-cpu", overrides), run, quiet=True)
    checkpoints = run / "checkpoints"
    state = read_checkpoint(checkpoints / checkpoint_name(2))
    save_best_checkpoint(checkpoints, 2, state, "online_linear_accuracy", 0.625)
    return run


def step_state(run: Path, step: int) -> dict:
    return read_checkpoint(run / "checkpoints" / checkpoint_name(step))


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_best_last_and_a_step_number_load_their_own_checkpoint(run):
    step2 = step_state(run, 2)["model"]
    _, best, step = load_trained_method(run, checkpoint="best")
    assert step == 2
    assert_same_weights(best.state_dict(), step2)
    _, last, step = load_trained_method(run, checkpoint="last")
    assert step == 4
    assert_same_weights(last.state_dict(), step_state(run, 4)["model"])
    assert any(not torch.equal(last.state_dict()[k], step2[k]) for k in step2)  # best != last
    _, two, step = load_trained_method(run, checkpoint="2")
    assert step == 2
    assert_same_weights(two.state_dict(), step2)
    assert load_trained_method(run)[2] == 4  # the default is the last


def test_a_missing_step_names_the_kept_steps(run):
    with pytest.raises(UserError) as err:
        load_trained_method(run, checkpoint="7")
    message = str(err.value)
    assert "step 7" in message and "2, 4" in message and "\n" not in message


@pytest.mark.parametrize("choice", ["first", "-3", "1.5", "", "step-2"])
def test_a_malformed_choice_names_the_option_and_its_forms(run, choice):
    with pytest.raises(UserError) as err:
        load_trained_method(run, checkpoint=choice)
    assert "--checkpoint" in str(err.value) and "last, best or a step number" in str(err.value)


def test_a_run_without_best_is_one_line_that_says_why(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(BEST_NAME, "cache", "probes"))
    with pytest.raises(UserError) as err:
        load_trained_method(copy, checkpoint="best")
    assert str(err.value) == NO_BEST
    result = cli("probe", copy, "--checkpoint", "best")
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [f"error: {NO_BEST}"]


def test_best_is_never_listed_pruned_or_resumed_from(tmp_path):
    folder = tmp_path / "checkpoints"
    model = {"w": torch.zeros(3)}
    save_best_checkpoint(folder, 1, {"step": 1, "model": model}, "online_knn_accuracy", 0.5)
    for step in range(1, 6):
        save_checkpoint(folder, step, {"step": step, "model": {"w": torch.full((3,), step)}}, 2)
    assert [p.name for p in find_checkpoints(folder)] == [checkpoint_name(5), checkpoint_name(4)]
    assert (folder / BEST_NAME).is_file()
    state, path = load_latest_checkpoint(folder)
    assert state["step"] == 5 and path.name == checkpoint_name(5)
    # a newer best (by its step) is still not what resume takes
    save_best_checkpoint(folder, 6, {"step": 6, "model": model}, "online_knn_accuracy", 0.75)
    assert load_latest_checkpoint(folder)[0]["step"] == 5
    state, path = load_checkpoint_choice(folder, "best")
    assert path.name == BEST_NAME and state["step"] == 6
    assert state["selected_by"] == {"metric": "online_knn_accuracy", "value": 0.75}
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["selected_by"])["value"] == 0.75
    assert not list(folder.glob(".*.tmp"))  # the atomic write left no temporary file
    with pytest.raises(ValueError):
        save_best_checkpoint(folder, 3, {"step": 2, "model": model}, "m", 0.1)


def test_feature_cache_tags_tell_best_from_step_files(run):
    assert open_encoder(run, "target", checkpoint="best").tag == "best2-target"
    assert open_encoder(run, "target", checkpoint="2").tag == "step2-target"
    assert open_encoder(run, "context").tag == "step4-context"
    recipe = read_run_recipe(run)
    assert open_method(run, recipe, False, "a test", checkpoint="best")[1] == "best2"
    with pytest.raises(UserError, match="--random-init"):
        open_encoder(run, "target", random_init=True, checkpoint="best")


def test_probe_request_keeps_its_positional_order():
    request = ProbeRequest(Path("r"), "d", None, 1.0, False, "target")
    assert request.checkpoint == "last" and request.which == "target"
    assert request.given_options("--checkpoint") == []
    assert ProbeRequest(Path("r"), checkpoint="best").given_options("--checkpoint") == [
        "--checkpoint"
    ]


def test_probe_cli_with_the_best_checkpoint(run):
    result = cli("probe", run, "--checkpoint", "best", "--json", "probe.batch_size=64")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["results"]["encoder"] == "best2-target"
    assert document["settings"]["checkpoint"] == "best"


def test_export_cli_of_a_step_writes_that_steps_encoder(run, tmp_path):
    out = tmp_path / "exp"
    result = cli("export", run, "--out", out, "--checkpoint", "2", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["results"]["step"] == 2 and document["settings"]["checkpoint"] == "2"
    assert "has not finished" not in result.stderr  # the step was chosen, not left unfinished
    _, method, _ = load_trained_method(run, checkpoint="2")
    expected = clean_state_dict(method.encoder("target").state_dict())
    assert_same_weights(load_file(str(out / "model.safetensors")), expected)
    _, last, _ = load_trained_method(run)
    last_target = clean_state_dict(last.encoder("target").state_dict())
    assert any(not torch.equal(last_target[k], expected[k]) for k in expected)
    config = json.loads((out / "config.json").read_text())
    assert config["step"] == 2 and config["checkpoint"] == checkpoint_name(2)
    assert "--checkpoint 2" in (out / "README.md").read_text()
    # an export holds one set of weights: --checkpoint other than last is refused there
    refused = cli(
        "embed",
        out,
        "--data",
        "builtin:shapes",
        "--out",
        tmp_path / "e.npy",
        "--checkpoint",
        "best",
    )
    assert (
        refused.exit_code == 2
        and "--checkpoint applies to run folders, not exports" in refused.stderr
    )


def test_export_of_best_says_how_it_was_chosen(run, tmp_path):
    out = tmp_path / "best"
    result = cli("export", run, "--out", out, "--checkpoint", "best", "--json")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["checkpoint"] == BEST_NAME and config["step"] == 2
    assert config["selected_by"] == {"metric": "online_linear_accuracy", "value": 0.625}
    card = (out / "README.md").read_text()
    assert "best checkpoint by the online probe (online_linear_accuracy 0.625)" in card


def test_embed_cli_with_the_best_checkpoint(run, tmp_path):
    arrays = {}
    for choice in ("best", "2", "last"):
        out = tmp_path / f"{choice}.npy"
        args = ["embed", run, "--data", "builtin:shapes", "--split", "test", "--out", out]
        result = cli(*args, "--checkpoint", choice, "--json")
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert document["settings"]["checkpoint"] == choice
        arrays[choice] = (np.load(out), document["results"]["encoder"])
    assert arrays["best"][1] == "best2-target" and arrays["2"][1] == "step2-target"
    assert np.array_equal(arrays["best"][0], arrays["2"][0])  # the same weights
    assert not np.array_equal(arrays["best"][0], arrays["last"][0])
