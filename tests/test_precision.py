"""Precision choice (bf16, fp16 fallback with a gradient scaler) and accumulation across ranks."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from torch import nn

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.checkpoint import load_latest_checkpoint
from jepactl.micro_batch import MicroPlan, batch_summary
from jepactl.precision import autocast, grad_scaler, resolve_precision
from jepactl.recipe import load_recipe
from jepactl.train import pretrain


def test_bf16_is_kept_where_the_device_has_it_and_becomes_fp16_where_not(monkeypatch):
    assert resolve_precision("bf16", "cpu") == ("bf16", None)
    assert resolve_precision("fp32", "cpu") == ("fp32", None)
    chosen, notice = resolve_precision("fp16", "cpu")  # no fast fp16 kernels on CPUs
    assert chosen == "bf16" and "no fast kernels" in notice
    # A pre-Ampere card (V100, T4) has no native bf16.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2")
    chosen, notice = resolve_precision("bf16", "cuda")
    assert chosen == "fp16" and "V100" in notice and "gradient scaler" in notice
    assert resolve_precision("fp32", "cuda") == ("fp32", None)
    assert resolve_precision("fp16", "cuda") == ("fp16", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("bf16", "cuda") == ("bf16", None)
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        resolve_precision("fp8", "cpu")


def test_only_fp16_gets_a_gradient_scaler_and_each_precision_its_dtype():
    assert grad_scaler("cpu", "bf16") is None and grad_scaler("cpu", "fp32") is None
    assert isinstance(grad_scaler("cpu", "fp16"), torch.amp.GradScaler)
    layer = nn.Linear(4, 4)
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        with autocast("cpu", name):
            assert layer(torch.randn(2, 4)).dtype == dtype


class Quadratic(nn.Module):
    """A one-parameter-tensor 'method': loss = mean((w * x)^2) * factor."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(8, 8))
        self.factor = 1e-4  # small enough that the scaled fp16 gradients do not overflow

    def ema_pairs(self):
        return []

    def forward(self, batch):
        # The product runs in the autocast dtype; the loss in fp32, as the methods' losses do.
        return {"loss": (batch["x"] @ self.w).float().pow(2).mean() * self.factor}


def _runner(model, recipe, precision):
    from accelerate import Accelerator

    from jepactl.step import StepRunner, build_optimizer

    accelerator = Accelerator(cpu=True)
    optimizer = build_optimizer(model, recipe, accelerator.device)
    return StepRunner(model, model, optimizer, accelerator, recipe, None, precision)


def test_fp16_steps_unscale_before_the_update_and_skip_an_overflowing_step():
    recipe = load_recipe("image/ijepa-cpu", ["optim.grad_clip=1.0", "optim.warmup_steps=0"])
    batch = {"x": torch.randn(4, 8)}
    half, full = Quadratic(), Quadratic()
    half_runner, full_runner = _runner(half, recipe, "fp16"), _runner(full, recipe, "fp32")
    assert half_runner.scaler is not None and full_runner.scaler is None
    scale = half_runner.scaler.get_scale()
    half_runner.run(iter([batch]), 0, 10)
    full_runner.run(iter([batch]), 0, 10)
    # Unscaled before clipping and AdamW: the fp16 step moves the weights as the fp32 one does.
    assert torch.allclose(half.w, full.w, atol=2e-3) and not torch.equal(half.w, torch.ones(8, 8))
    assert half_runner.scaler.get_scale() == scale
    before = half.w.detach().clone()
    half.factor = float("inf")  # an overflowing backward: the step is skipped, the scale halves
    half_runner.run(iter([batch]), 1, 10)
    assert torch.equal(half.w, before)
    assert half_runner.scaler.get_scale() == scale / 2


def test_the_start_line_gives_the_per_process_and_the_global_batch():
    plan = MicroPlan(64, 32, 2, "recipe")
    line = batch_summary(64, 4, plan, "bf16")
    assert "batch 64 per process x 4 process(es) = global batch 256" in line
    assert "2 micro-batches of 32" in line and "precision bf16" in line
    assert "one micro-batch" in batch_summary(8, 1, MicroPlan(8, 8, 1, "recipe"), "fp32")


def tiny(max_steps, extra=()):
    return load_recipe(
        "image/ijepa-cpu",
        [*TINY_IMAGE_OVERRIDES, f"train.max_steps={max_steps}", *extra],
    )


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_an_fp16_run_keeps_its_scaler_in_the_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    # fp16 is what a card without bf16 trains in; forced here on the CPU, which would pick bf16.
    monkeypatch.setattr("jepactl.train.resolve_precision", lambda requested, device: ("fp16", None))
    extra = ["train.precision=fp16", "train.checkpoint_every=2", "train.log_every=1"]
    straight = tmp_path / "straight"
    pretrain(tiny(4, extra), straight, quiet=True)
    split = tmp_path / "split"
    pretrain(tiny(4, extra), split, quiet=True, stop_after=2)
    state, _ = load_latest_checkpoint(split / "checkpoints")
    assert state["step"] == 2 and state["grad_scaler"]["scale"] > 1
    pretrain(tiny(4, extra), split, resume=True, quiet=True)
    assert losses(split) == pytest.approx(losses(straight), abs=0, rel=0)
    env = json.loads((split / "env.json").read_text())
    assert (
        env["precision"] == "fp16" and env["global_batch_size"] == env["micro_batch"]["batch_size"]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accumulate_on_two_ranks(rank: int, port: int, out: str) -> None:
    """One rank of a gloo group: 2 optimizer steps of 3 micro-batches each, counting the
    gradient all-reduces DDP makes."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    from accelerate import Accelerator
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from jepactl.step import StepRunner, build_optimizer

    torch.manual_seed(0)
    recipe = load_recipe("image/ijepa-cpu", ["optim.grad_clip=0", "optim.warmup_steps=0"])
    accelerator = Accelerator(cpu=True)
    method = Quadratic()
    optimizer = build_optimizer(method, recipe, accelerator.device)
    model, optimizer = accelerator.prepare(method, optimizer)
    reduces = []

    def counting_hook(state, bucket):
        reduces.append(bucket.buffer().clone())
        return default_hooks.allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting_hook)
    runner = StepRunner(model, model, optimizer, accelerator, recipe, MicroPlan(6, 2, 3, "recipe"))
    generator = torch.Generator().manual_seed(1)
    batches = [{"x": torch.randn(2, 6, 8, generator=generator)[rank]} for _ in range(2)]
    for step, batch in enumerate(batches):
        runner.run(iter([batch]), step, 2)
    weights = [torch.empty_like(method.w) for _ in range(2)]
    torch.distributed.all_gather(weights, method.w.detach())
    if rank == 0:
        with open(out, "w") as handle:
            same = torch.equal(weights[0], weights[1])
            json.dump({"reduces": len(reduces), "steps": 2, "same_weights": same}, handle)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_accumulation_micro_steps_do_not_sync_across_ranks(tmp_path):
    out = tmp_path / "reduces.json"
    torch.multiprocessing.spawn(
        _accumulate_on_two_ranks, args=(_free_port(), str(out)), nprocs=2, join=True
    )
    counted = json.loads(out.read_text())
    # One all-reduce (the model has one bucket) per optimizer step, not one per micro-batch.
    assert counted["reduces"] == counted["steps"] == 2
    assert counted["same_weights"]  # the one all-reduce carried every micro-batch's gradient
