"""One optimizer step, shared by the trainer and ``jepactl bench``.

AdamW over decayed and non-decayed parameter groups; the step's batch cut into micro-batches
(``micro_batch.py``), each forward/backward weighted by its share of the batch, DDP syncing
only the last; clipping, the optimizer update and the EMA target update. ``trial_step`` is the
side-effect-free forward/backward that sizes the micro-batch before the first step.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time

import torch
from accelerate import Accelerator
from torch import nn

from jepactl.micro_batch import (
    MicroPlan,
    batch_length,
    is_out_of_memory,
    slice_batch,
    split_sizes,
)
from jepactl.nn.ema import ema_update
from jepactl.precision import autocast, grad_scaler
from jepactl.recipe import Recipe
from jepactl.schedules import ema_momentum, learning_rate, weight_decay

log = logging.getLogger("jepactl")


def param_groups(model: nn.Module) -> list[dict]:
    """AdamW groups: weight decay on matrices only; none on biases, norms and learned tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or "token" in name or "registers" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "apply_wd": True},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0},
    ]


def build_optimizer(
    method: nn.Module, recipe: Recipe, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over ``param_groups``: fused kernels on CUDA, foreach (multi-tensor) on CPU."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(method),
        lr=recipe.optim.lr,
        betas=recipe.optim.betas,
        eps=recipe.optim.eps,
        weight_decay=recipe.optim.weight_decay,
        **({"fused": True} if fused else {"foreach": True}),
    )


class StepRunner:
    """One optimizer step: the step's batch cut into micro-batches (forward, backward), clip,
    AdamW, EMA.

    Shared by the trainer and ``jepactl bench``; ``timer(phase)`` is called after each phase
    when benchmarking (it may synchronise the device), never during training, so the step has
    no host syncs. ``plan`` says how the batch is cut (``micro_batch.py``); without one the
    whole batch is one micro-batch.
    """

    def __init__(
        self,
        model: nn.Module,
        forward,
        optimizer: torch.optim.Optimizer,
        accelerator: Accelerator,
        recipe: Recipe,
        plan: MicroPlan | None = None,
        precision: str | None = None,
    ) -> None:
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.accelerator, self.recipe, self.plan = accelerator, recipe, plan
        self.device = accelerator.device
        # The precision the trainer resolved for this device (precision.resolve_precision).
        self.precision = precision or recipe.train.precision
        self.autocast = autocast(self.device, self.precision)
        self.scaler = grad_scaler(self.device, self.precision)  # fp16 only
        self.ema_pairs = accelerator.unwrap_model(model).ema_pairs()
        self.data_wait = 0.0
        self.retry_on_oom = True  # halve an auto micro-batch once after an out-of-memory error
        self.on_replan = None  # called with the new plan after such a retry

    def set_schedules(self, step: int, total: int) -> dict[str, float]:
        optim = self.recipe.optim
        lr, wd = learning_rate(step, total, optim), weight_decay(step, total, optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if group.get("apply_wd"):
                group["weight_decay"] = wd
        values = {"lr": lr, "weight_decay": wd}
        if self.ema_pairs:  # methods without an EMA target (concept-JEPA) log no momentum
            values["momentum"] = ema_momentum(step, total, self.recipe.ema)
        return values

    def forward_backward(
        self, batch: dict, sizes: list[int], timer=None
    ) -> tuple[torch.Tensor, dict]:
        """Accumulate the gradient of ``batch``'s mean loss over micro-batches of ``sizes``.

        Each micro-batch's loss is weighted by its share of the batch, so the accumulated
        gradient is the whole batch's; DDP all-reduces only on the last micro-batch.
        """
        total = sum(sizes)
        step_loss = torch.zeros((), device=self.device)
        out, start = {}, 0
        for i, size in enumerate(sizes):
            micro = slice_batch(batch, start, start + size) if len(sizes) > 1 else batch
            start += size
            sync = i == len(sizes) - 1
            with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model):
                with self.autocast:
                    out = self.forward(micro)
                timer and timer("forward")
                # fp32 before scaling: an fp16 loss times fp16's first scale (2**16) is inf.
                weighted = out["loss"].float() * (size / total)
                self.accelerator.backward(
                    self.scaler.scale(weighted) if self.scaler is not None else weighted
                )
                timer and timer("backward")
            step_loss += out["loss"].detach() * (size / total)
        return step_loss, out

    def run(
        self, batches, step: int, total: int, timer=None
    ) -> tuple[torch.Tensor, dict, int, dict[str, float]]:
        """Return (mean loss tensor, last forward output, samples seen, schedule values)."""
        schedules = self.set_schedules(step, total)
        waited = time.perf_counter()
        batch = device_batch(next(batches), self.device)
        self.data_wait += time.perf_counter() - waited
        timer and timer("data")
        samples = batch_length(batch)
        sizes = self.plan.sizes() if self.plan is not None else [samples]
        try:
            step_loss, out = self.forward_backward(batch, sizes, timer)
        except (RuntimeError, MemoryError) as err:
            if not (is_out_of_memory(err) and self._halve_after_oom()):
                raise
            step_loss, out = self.forward_backward(batch, self.plan.sizes(), timer)
        if self.scaler is not None:  # clip the true gradients, not the scaled ones
            self.scaler.unscale_(self.optimizer)
        if self.recipe.optim.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        timer and timer("optimizer")
        for online, target in self.ema_pairs:
            ema_update(target, online, schedules["momentum"])
        timer and timer("ema")
        return step_loss, out, samples, schedules

    def _halve_after_oom(self) -> bool:
        """After an out-of-memory error in forward/backward: clear the partial gradients, halve
        an automatically chosen micro-batch and return True (once per run); else False."""
        plan = self.plan
        if (
            not self.retry_on_oom
            or plan is None
            or not plan.chosen_by.startswith("auto")
            or plan.micro_batch_size < 2
            or "after out-of-memory" in plan.chosen_by
        ):
            return False
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        micro = max(split_sizes(plan.batch_size, plan.micro_batch_size // 2))
        self.plan = MicroPlan(
            plan.batch_size,
            micro,
            len(split_sizes(plan.batch_size, micro)),
            plan.chosen_by + ", halved after out-of-memory",
        )
        log.warning("out of memory in a training step: retrying it with %s", self.plan.describe())
        if self.on_replan is not None:
            self.on_replan(self.plan)
        return True


def device_batch(batch: dict, device: torch.device) -> dict:
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }


def trial_step(
    model: nn.Module,
    accelerator: Accelerator,
    recipe: Recipe,
    batch: dict,
    precision: str | None = None,
) -> None:
    """One forward/backward on ``batch`` that leaves no trace: gradients cleared, RNG and
    buffers (e.g. BatchNorm statistics) restored, no DDP all-reduce. Sizes the micro-batch."""
    unwrapped = accelerator.unwrap_model(model)
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    buffers = {name: b.detach().clone() for name, b in unwrapped.named_buffers()}
    device = accelerator.device
    try:
        with accelerator.no_sync(model), autocast(device, precision or recipe.train.precision):
            loss = model(device_batch(batch, device))["loss"]
        with accelerator.no_sync(model):
            loss.backward()
        del loss
    finally:
        unwrapped.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in unwrapped.named_buffers():
                b.copy_(buffers[name])
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
