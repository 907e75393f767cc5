"""Online probes during pretraining and the best checkpoint they select."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.checkpoint import read_checkpoint
from jepactl.errors import UserError
from jepactl.evaluate.online import OnlineProbe, rankme, resolve_every
from jepactl.recipe import load_recipe
from jepactl.train import pretrain

ONLINE = ["train.log_every=2", "eval.every=2", "eval.fit_samples=120", "eval.score_samples=60"]


def tiny(steps, extra=()):
    overrides = [*TINY_IMAGE_OVERRIDES, f"train.max_steps={steps}", *ONLINE, *extra]
    return load_recipe("image/ijepa-cpu", overrides)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_online_scores_land_in_the_logged_records_and_the_split_is_recorded(tmp_path):
    run = tmp_path / "run"
    pretrain(tiny(4), run, quiet=True)
    logged = records(run)
    assert [r["step"] for r in logged] == [2, 4]
    for r in logged:
        assert 0.0 <= r["online_linear_accuracy"] <= 1.0 and 0.0 <= r["online_knn_accuracy"] <= 1
        assert 1.0 <= r["online_rankme"] <= 32 and r["online_probe_s"] > 0
    described = json.loads((run / "online_probe.json").read_text())
    assert described["split"] == "the data's train / test splits"
    assert (described["fit_samples"], described["score_samples"], described["every"]) == (
        120,
        60,
        2,
    )


def test_baselines_score_the_initial_encoder_and_the_raw_input_once_per_run(tmp_path):
    # lr 0 leaves the encoder (and its EMA copy) as initialised, so the step-0 baseline must
    # equal the probe at every later step: it scores the same encoder the online probe does
    run = tmp_path / "run"
    frozen = ["optim.lr=0", "optim.start_lr=0", "optim.final_lr=0", "train.checkpoint_every=2"]
    pretrain(tiny(4, frozen), run, quiet=True, stop_after=2)
    first = json.loads((run / "online_probe.json").read_text())["baselines"]
    step0 = {f"online_{k}": v for k, v in first["step_0"].items()}
    for record in records(run):
        assert {k: record[k] for k in step0} == pytest.approx(step0, abs=1e-6)
    assert first["raw_input"]["dims"] == 3 * 16 * 16  # the images as the encoder receives them
    raw = first["raw_input"]
    assert 0.0 <= raw["linear_accuracy"] <= 1.0 and 0.0 <= raw["knn_accuracy"] <= 1.0
    assert raw["rankme"] > first["step_0"]["rankme"]  # 768 pixel dims against 32 features

    pretrain(tiny(4, frozen), run, resume=True, quiet=True)  # resumed: the first ones kept
    assert json.loads((run / "online_probe.json").read_text())["baselines"] == first


@pytest.mark.slow
def test_resume_with_online_probes_repeats_the_straight_run_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    pretrain(tiny(6, ["train.checkpoint_every=2"]), straight, quiet=True)
    pretrain(tiny(6, ["train.checkpoint_every=2"]), split, quiet=True, stop_after=2)
    pretrain(tiny(6, ["train.checkpoint_every=2"]), split, resume=True, quiet=True)
    drop = ("samples_per_s", "data_wait_fraction", "online_probe_s")
    clean = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert clean(records(split)) == clean(records(straight))


def test_the_best_checkpoint_is_the_step_where_the_probe_peaked(tmp_path, monkeypatch):
    # the step-0 baseline (0.95) is no candidate: there is no checkpoint of the initial weights
    scores = iter([0.95, 0.5, 0.9, 0.4])  # then peaks at step 4 of 6

    def score(self, encoder, precision):
        return {"online_linear_accuracy": next(scores)}

    monkeypatch.setattr(OnlineProbe, "score", score)
    run = tmp_path / "run"
    pretrain(tiny(6, ["train.checkpoint_every=2", "checkpoint.keep=5"]), run, quiet=True)
    best = read_checkpoint(run / "checkpoints" / "best.safetensors")
    assert best["step"] == 4
    step4 = read_checkpoint(run / "checkpoints" / "step-00000004.safetensors")
    assert all(torch.equal(best["model"][k], step4["model"][k]) for k in step4["model"])
    last = read_checkpoint(run / "checkpoints" / "step-00000006.safetensors")
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


def test_without_labels_the_best_checkpoint_follows_the_loss(tmp_path, capsys):
    run = tmp_path / "run"
    recipe = tiny(4, ["eval.every=0", "train.checkpoint_every=2"])
    pretrain(recipe, run, quiet=True)
    logged = {r["step"]: r["loss"] for r in records(run)}
    best = read_checkpoint(run / "checkpoints" / "best.safetensors")
    assert logged[best["step"]] == min(logged.values())
    assert not any("online_linear_accuracy" in r for r in records(run))


def test_eval_every_must_be_a_multiple_of_the_log_period():
    assert resolve_every("auto", 10, 1000) == 200 and resolve_every("auto", 40, 300) == 80
    assert resolve_every("auto", 10, 99) == 0  # a smoke run
    assert resolve_every(0, 10, 100) == 0 and resolve_every(20, 10, 100) == 20
    with pytest.raises(UserError, match="eval.every"):
        resolve_every(15, 10, 100)


def test_rankme_counts_the_directions_the_features_use():
    torch.manual_seed(0)
    assert rankme(torch.randn(500, 8)) == pytest.approx(8, rel=0.05)
    flat = torch.randn(500, 1) @ torch.randn(1, 8)
    assert rankme(flat) == pytest.approx(1, abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["sar", "ecg", "tabular", "views", "lidar"])
def test_every_labelled_domain_has_an_online_probe(tmp_path, domain):
    import test_json_schema
    from typer.testing import CliRunner

    from jepactl.cli import app

    recipe, args, _ = getattr(test_json_schema, domain)(tmp_path)
    online = ["train.log_every=1", "eval.every=1", "eval.fit_samples=40", "eval.score_samples=20"]
    run = tmp_path / "run"
    command = ["pretrain", recipe, *map(str, args), "--out", str(run), "--max-steps", "2", *online]
    done = CliRunner().invoke(app, [*command, "--quiet"])
    assert done.exit_code == 0, done.output
    assert all(0 <= r["online_linear_accuracy"] <= 1 for r in records(run))


class MeanOfInputs(torch.nn.Module):
    """A stand-in encoder: its pooled feature is the per-channel mean of the input."""

    def pooled(self, x):
        return x.flatten(2).mean(-1) if x.ndim > 2 else x


def baselines_of(shape, count=40):
    from types import SimpleNamespace

    from torch.utils.data import TensorDataset

    labels = torch.arange(count) % 2
    inputs = torch.randn(count, *shape) + labels.view(-1, *[1] * len(shape)).float()
    data = TensorDataset(inputs, labels)
    config = SimpleNamespace(batch_size=16, seed=0)
    probe = OnlineProbe(data, data, 2, {}, config)
    return probe.measure_baselines(MeanOfInputs(), "fp32")


def test_the_raw_input_baseline_is_skipped_with_the_reason_above_its_size_limit():
    from jepactl.evaluate.online import RAW_INPUT_MAX_DIMS

    small = baselines_of((3, 4, 4))
    assert small["raw_input"]["dims"] == 48 and small["raw_input"]["linear_accuracy"] > 0.9
    big = baselines_of((RAW_INPUT_MAX_DIMS + 1,), count=8)
    assert big["raw_input"] == {
        "skipped": f"{RAW_INPUT_MAX_DIMS + 1} values per sample (more than {RAW_INPUT_MAX_DIMS})"
    }
    assert set(big["step_0"]) == {"linear_accuracy", "knn_accuracy", "rankme"}
