"""Micro-batches: the effective batch is kept, memory is measured, a step that cannot fit stops
before it starts, and gradient accumulation gives the big batch's loss and update."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_IMAGE_OVERRIDES
from jepactl import micro_batch
from jepactl.errors import UserError
from jepactl.micro_batch import (
    MicroPlan,
    loader_workers,
    plan_micro_batches,
    slice_batch,
    split_sizes,
)
from jepactl.recipe import load_recipe
from jepactl.runs import read_run_recipe
from jepactl.train import pretrain


def tiny(extra=()):
    return load_recipe(
        "image/ijepa-cpu",
        [*TINY_IMAGE_OVERRIDES, "train.max_steps=3", "train.checkpoint_every=100", *extra],
    )


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_split_sizes_are_balanced_and_sum_to_the_batch():
    assert split_sizes(2048, 700) == [683, 683, 682]
    assert split_sizes(8, 8) == [8] and split_sizes(8, 100) == [8]
    assert split_sizes(7, 1) == [1] * 7
    for batch, micro in ((128, 45), (75, 16), (512, 512), (5, 2)):
        sizes = split_sizes(batch, micro)
        assert sum(sizes) == batch and max(sizes) <= micro and max(sizes) - min(sizes) <= 1


def test_slice_batch_cuts_every_batch_first_tensor():
    batch = {
        "images": torch.arange(12).view(6, 2),
        "targets": torch.zeros(6, 3, 4),
        "scalar": torch.tensor(1.0),
        "name": "x",
    }
    part = slice_batch(batch, 2, 5)
    assert part["images"].tolist() == [[4, 5], [6, 7], [8, 9]]
    assert part["targets"].shape == (3, 3, 4) and part["scalar"].item() == 1.0
    assert part["name"] == "x"


@pytest.mark.slow
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-5), ("bf16", 2e-2)])
def test_accumulated_micro_batches_match_one_big_batch(tmp_path, precision, tolerance):
    whole = pretrain(
        tiny([f"train.precision={precision}", "train.micro_batch_size=8"]),
        tmp_path / "whole",
        quiet=True,
    )
    cut = pretrain(
        tiny([f"train.precision={precision}", "train.micro_batch_size=3"]),
        tmp_path / "cut",
        quiet=True,
    )
    assert whole.step == cut.step == 3
    a, b = metrics(tmp_path / "whole"), metrics(tmp_path / "cut")
    # Same data, same masks (sampled per optimizer step), same schedules: the loss curve of
    # three micro-batches (3 + 3 + 2) is the big batch's, up to float summation order.
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=tolerance)
    assert [r["lr"] for r in b] == [r["lr"] for r in a]
    env = json.loads((tmp_path / "cut" / "env.json").read_text())
    assert env["micro_batch"]["micro_batch_size"] == 3
    assert env["micro_batch"]["accumulation"] == 3 and env["micro_batch"]["batch_size"] == 8


@pytest.mark.slow
def test_auto_cuts_the_batch_when_memory_is_short_and_keeps_the_effective_batch(
    tmp_path, monkeypatch
):
    def measured_room(device, reserve):  # room for a few samples above the resting process
        return micro_batch.PeakMeter(device).current() + 64 * 1024**2

    monkeypatch.setattr(micro_batch, "allowed_peak_bytes", measured_room)
    monkeypatch.setattr(micro_batch, "TRIAL_SIZES", (2, 4))
    # Wide tokens and a long sequence: per-sample activations of several MB, well above noise.
    run = tmp_path / "auto"
    pretrain(
        tiny(
            [
                "train.batch_size=64",
                "data.image_size=64",
                "model.embed_dim=96",
                "model.num_heads=4",
                "predictor.embed_dim=48",
            ]
        ),
        run,
        quiet=True,
    )
    env = json.loads((run / "env.json").read_text())["micro_batch"]
    assert env["chosen_by"].startswith("auto: measured")
    assert 1 <= env["micro_batch_size"] < 64 and env["batch_size"] == 64
    assert env["accumulation"] == len(split_sizes(64, env["micro_batch_size"]))
    assert env["predicted_peak_gib"] <= env["allowed_peak_gib"]
    assert env["first_step_peak_gib"] > 0 and len(env["trial_peaks_gib"]) == 2
    assert "train.micro_batch_size=" in (run / "recipe.yaml").read_text()
    # The recipe keeps `auto` (so it adapts on the next machine) and the effective batch.
    recipe = read_run_recipe(run)
    assert recipe.train.micro_batch_size == "auto" and recipe.train.batch_size == 64
    assert all(r["samples_per_s"] > 0 for r in metrics(run))


@pytest.mark.slow
def test_no_room_for_one_sample_stops_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr(
        micro_batch,
        "allowed_peak_bytes",
        lambda device, reserve: micro_batch.PeakMeter(device).current() - 1,
    )
    with pytest.raises(
        UserError,
        match=r"not enough memory: one training sample needs .* GiB"
        r".*image/ijepa-cpu",
    ) as err:
        pretrain(
            load_recipe(
                "image/ijepa",
                [
                    "data.path=builtin:shapes",
                    "data.image_size=32",
                    "model.patch_size=8",
                    "train.batch_size=16",
                    "train.num_workers=0",
                ],
            ),
            tmp_path / "r",
            quiet=True,
        )
    assert "image/ijepa-cpu" in str(err.value)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_plan_fits_a_measured_per_sample_cost(monkeypatch):
    """A trial that holds 40 MB per sample: the plan finds about (room / 40 MB) samples."""
    per_sample = 40 * 1024**2

    def trial(m):
        held = torch.ones(m * per_sample // 4)
        held += 1  # touch every page
        del held

    room = 400 * 1024**2
    device = torch.device("cpu")
    base = micro_batch.PeakMeter(device).current()
    monkeypatch.setattr(micro_batch, "allowed_peak_bytes", lambda d, r: base + room)
    plan = plan_micro_batches("auto", 64, trial, device, extra_bytes=0, reserve_bytes=0)
    assert plan.chosen_by == "auto: measured"
    # 400 MB / 1.2 head-room / 40 MB = 8.3, less the trial's own overhead
    assert 6 <= plan.micro_batch_size <= 8
    assert sum(plan.sizes()) == 64
    assert plan_micro_batches("auto", 4, trial, device, 0, 0).micro_batch_size == 4
    # An explicit micro-batch that cannot fit is refused before the first step, naming the
    # largest that fits; one that fits is kept as the recipe says.
    with pytest.raises(
        UserError,
        match=r"train.micro_batch_size=32: .* set "
        r"train.micro_batch_size=[678] \(or auto\)",
    ):
        plan_micro_batches(32, 64, trial, device, extra_bytes=0, reserve_bytes=0)
    kept = plan_micro_batches(4, 64, trial, device, extra_bytes=0, reserve_bytes=0)
    assert kept.micro_batch_size == 4 and kept.chosen_by == "recipe" and kept.accumulation == 16


@pytest.mark.slow
def test_explicit_micro_batch_is_checked_and_capped():
    plan = plan_micro_batches(100, 64, lambda m: None, torch.device("cpu"), 0, 0)
    assert plan.micro_batch_size == 64 and plan.accumulation == 1
    with pytest.raises(UserError, match="train.micro_batch_size"):
        plan_micro_batches(0, 64, lambda m: None, torch.device("cpu"), 0, 0)


def test_an_out_of_memory_step_is_retried_once_with_half_the_micro_batch(tmp_path):
    from accelerate import Accelerator

    from jepactl.registry import method_spec
    from jepactl.step import StepRunner, build_optimizer
    from jepactl.train import build_method

    recipe = tiny()
    spec = method_spec(recipe.method)
    dataset, collate, _ = spec.pretrain_data(recipe, recipe.data.path)
    method = build_method(spec, recipe)
    accelerator = Accelerator(cpu=True)
    optimizer = build_optimizer(method, recipe, accelerator.device)
    batch = collate([dataset[(i, i, 7)] for i in range(8)])
    seen = []

    def forward(micro):
        seen.append(micro["images"].shape[0])
        if micro["images"].shape[0] > 4:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 1000000000000 bytes"
            )
        return method(micro)

    runner = StepRunner(
        method,
        forward,
        optimizer,
        accelerator,
        recipe,
        MicroPlan(8, 8, 1, "auto: whole batch fits"),
    )
    replans = []
    runner.on_replan = replans.append
    loss, _, samples, _ = runner.run(iter([batch]), 0, 3)
    assert samples == 8 and torch.isfinite(loss)
    assert seen == [8, 4, 4] and replans[0].micro_batch_size == 4
    assert runner.plan.chosen_by.endswith("halved after out-of-memory")
    with pytest.raises(RuntimeError, match="can't allocate"):  # only once per run
        runner.plan = MicroPlan(8, 8, 1, runner.plan.chosen_by)
        runner.run(iter([batch]), 1, 3)


def test_loader_workers_never_exceed_the_cpus_minus_one(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert loader_workers(8) == 1 and loader_workers("auto") == 1 and loader_workers(0) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert loader_workers(8) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)))
    assert loader_workers("auto") == 8 and loader_workers(4) == 4


def test_old_grad_accum_recipes_read_as_the_effective_batch(caplog):
    recipe = load_recipe("image/ijepa-cpu", ["train.batch_size=4", "train.grad_accum=3"])
    assert recipe.train.batch_size == 12 and recipe.train.micro_batch_size == 4
    assert "deprecated" in caplog.text


def test_the_first_steps_peak_shrinks_a_micro_batch_the_trials_underestimated():
    gib = micro_batch.GIB
    plan = MicroPlan(128, 64, 2, "auto: measured", 3.5, 4.0, [(2, 1.0), (8, 1.3)])
    kept = micro_batch.refit_after_first_step(plan, int(3.3 * gib))
    assert kept.micro_batch_size == 64 and kept.first_step_peak_gib == 3.3
    # 6 GiB at 64 samples: 5 GiB over 62 samples above the 2-sample trial, so 4 GiB (less the
    # 1.2 growth head-room) holds 2 + (4 / 1.2 - 1) / (5 / 62) = 30 samples; 128 cut into equal
    # pieces of at most 30 gives five of 25-26.
    shrunk = micro_batch.refit_after_first_step(plan, 6 * gib)
    assert shrunk.micro_batch_size == 26 and shrunk.accumulation == 5
    assert shrunk.chosen_by.endswith("shrunk after the first step's peak")
    assert shrunk.predicted_peak_gib <= 4.0
    assert (
        micro_batch.refit_after_first_step(plan, 6 * gib, may_shrink=False).micro_batch_size == 64
    )
