"""Experiment trackers (train.trackers): TensorBoard end to end; the others share its path."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.errors import UserError
from jepactl.recipe import load_recipe
from jepactl.trackers import check_trackers, hyperparameters
from jepactl.train import pretrain


def tiny(extra=()):
    overrides = [*TINY_IMAGE_OVERRIDES, "train.max_steps=4", "train.log_every=2", *extra]
    return load_recipe("image/ijepa-cpu", overrides)


def test_tensorboard_gets_the_metrics_scalars_and_the_recipe(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    pretrain(tiny(["train.trackers=[tensorboard]"]), run, quiet=True)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = list((run / "trackers").rglob("events.out.tfevents.*"))
    assert events, list((run / "trackers").rglob("*"))
    scalars = {}
    for event_file in events:
        acc = EventAccumulator(str(event_file.parent)).Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    assert [s for s, _ in scalars["loss"]] == [r["step"] for r in logged] == [2, 4]
    assert [v for _, v in scalars["loss"]] == pytest.approx([r["loss"] for r in logged])
    assert {"lr", "samples_per_s", "embed_std"} <= set(scalars) and "step" not in scalars
    hparams = (run / "trackers").rglob("hparams.yml")
    assert any("train.batch_size" in p.read_text() for p in hparams)


def test_an_unknown_or_missing_tracker_is_one_line_naming_the_extra(monkeypatch):
    with pytest.raises(UserError, match="unknown tracker 'tensorbord'"):
        check_trackers(["tensorbord"])
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r'wandb is not installed: pip install "jepactl\[wandb\]"'):
        check_trackers(["wandb"])


def test_hyperparameters_are_flat_scalars():
    flat = hyperparameters(tiny())
    assert flat["train.batch_size"] == 8 and flat["optim.lr"] > 0
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    assert isinstance(flat["train.trackers"], str)  # a list, as text
