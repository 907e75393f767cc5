"""The trainer: the only training loop for pretraining, shared by every method.

Accelerate provides process groups, DDP and device placement (one CPU, one GPU, ``accelerate
launch`` multi-GPU/multi-node, gloo on CPU). Precision is torch autocast (bf16 on CPU and CUDA).
Schedules are pure functions of the optimizer step; the data order is a pure function of
(seed, micro-batch, rank); checkpoints hold model, target, optimizer, step and RNG. Together that
makes ``--resume`` continue exactly where the run stopped. SIGTERM/SIGUSR1 save and exit 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from jepactl.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from jepactl.compile import compile_blocks
from jepactl.data.sampling import BatchPlan
from jepactl.errors import UserError
from jepactl.methods import method_module
from jepactl.monitor import CollapseWatch, collapse_stats
from jepactl.nn.ema import ema_update
from jepactl.progress import TrainProgress
from jepactl.recipe import Recipe
from jepactl.runs import CHECKPOINT, write_run_files
from jepactl.schedules import ema_momentum, learning_rate, weight_decay

log = logging.getLogger("jepactl")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    finished: bool  # False when stopped by a signal (resume with --resume)
    last_loss: float | None


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
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False,
                                                   "weight_decay": 0.0}]


def build_optimizer(method: nn.Module, recipe: Recipe, device: torch.device
                    ) -> torch.optim.Optimizer:
    """AdamW over ``param_groups``: fused kernels on CUDA, foreach (multi-tensor) on CPU."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(param_groups(method), lr=recipe.optim.lr, betas=recipe.optim.betas,
                             eps=recipe.optim.eps, weight_decay=recipe.optim.weight_decay,
                             **({"fused": True} if fused else {"foreach": True}))


def autocast_context(device: torch.device, precision: str):
    return (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
            else contextlib.nullcontext())


class StepRunner:
    """One optimizer step: micro-batches (forward, backward), clip, AdamW, EMA.

    Shared by the trainer and ``jepactl bench``; ``timer(phase)`` is called after each phase
    when benchmarking (it may synchronise the device), never during training, so the step has
    no host syncs.
    """

    def __init__(self, model: nn.Module, forward, optimizer: torch.optim.Optimizer,
                 accelerator: Accelerator, recipe: Recipe) -> None:
        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.accelerator, self.recipe = accelerator, recipe
        self.device = accelerator.device
        self.autocast = autocast_context(self.device, recipe.train.precision)
        self.ema_pairs = accelerator.unwrap_model(model).ema_pairs()
        self.data_wait = 0.0

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

    def run(self, batches, step: int, total: int, timer=None
            ) -> tuple[torch.Tensor, dict, int, dict[str, float]]:
        """Return (mean loss tensor, last forward output, samples seen, schedule values)."""
        accum = self.recipe.train.grad_accum
        schedules = self.set_schedules(step, total)
        step_loss = torch.zeros((), device=self.device)
        out, samples = {}, 0
        for micro in range(accum):
            waited = time.perf_counter()
            batch = _device_batch(next(batches), self.device)
            self.data_wait += time.perf_counter() - waited
            timer and timer("data")
            sync = micro == accum - 1
            with (contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)):
                with self.autocast:
                    out = self.forward(batch)
                timer and timer("forward")
                self.accelerator.backward(out["loss"] / accum)
                timer and timer("backward")
            step_loss += out["loss"].detach() / accum
            samples += batch[next(iter(batch))].shape[0]
        if self.recipe.optim.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        timer and timer("optimizer")
        for online, target in self.ema_pairs:
            ema_update(target, online, schedules["momentum"])
        timer and timer("ema")
        return step_loss, out, samples, schedules


class StopFlag:
    """Set by SIGTERM/SIGUSR1; the loop checks it between steps, saves and exits cleanly."""

    def __init__(self) -> None:
        self.raised = False
        self.previous = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's signature
    """DataLoader workers ignore SIGTERM/SIGUSR1: a scheduler signals the whole process group,
    and the main process must outlive its workers long enough to save the checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _device_batch(batch: dict, device: torch.device) -> dict:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (written before a crash, not in the checkpoint)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))



def build_method(module, recipe: Recipe) -> nn.Module:
    """Build the recipe's method from the train seed (identical weights on every process) and
    switch on activation checkpointing in every module that supports it if the recipe asks,
    and compile its transformer blocks if ``train.compile``."""
    torch.manual_seed(recipe.train.seed)
    method = module.build(recipe)
    if recipe.train.compile:
        compile_blocks(method)
    if recipe.train.activation_checkpointing:
        for sub in method.modules():
            if hasattr(sub, "activation_checkpointing"):
                sub.activation_checkpointing = True
    return method

def pretrain(recipe: Recipe, run_dir: Path, resume: bool = False, quiet: bool = False,
             stop_after: int | None = None) -> TrainResult:
    """Train ``recipe`` into ``run_dir``; with ``resume`` continue from its last checkpoint.

    ``stop_after`` stops at that step exactly as a preemption signal would (checkpoint, return
    unfinished), keeping the schedules of the full run.
    """
    module = method_module(recipe.method)
    cfg = recipe.train
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device

    checkpoint_path = run_dir / CHECKPOINT
    state = None
    if resume:
        if not checkpoint_path.is_file():
            raise UserError(f"cannot resume: '{checkpoint_path}' does not exist")
        state = load_checkpoint(checkpoint_path)
    elif checkpoint_path.exists():
        raise UserError(f"run folder '{run_dir}' already has a checkpoint; "
                        "pass --resume to continue it or choose another --out")

    dataset, collate, source = module.pretrain_data(recipe, recipe.data.path)

    method = build_method(module, recipe)
    optimizer = build_optimizer(method, recipe, device)
    start_step = 0
    if state is not None:
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = int(state["step"])
    method.to(device)
    model, optimizer = accelerator.prepare(method, optimizer)
    if state is not None:
        set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    else:
        torch.manual_seed(cfg.seed + 1000 * rank)

    if accelerator.is_main_process:
        write_run_files(run_dir, recipe, world, str(device))
        _truncate_metrics(run_dir / "metrics.jsonl", start_step)
    accelerator.wait_for_everyone()

    plan = BatchPlan(len(dataset), cfg.batch_size, cfg.seed, rank, world,
                     start=start_step * cfg.grad_accum)
    loader = DataLoader(dataset, batch_sampler=plan, collate_fn=collate,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=ignore_stop_signals,
                        persistent_workers=cfg.num_workers > 0,
                        prefetch_factor=4 if cfg.num_workers > 0 else None)
    batches = iter(loader)

    total = cfg.max_steps
    progress = TrainProgress(total, start_step, quiet or not accelerator.is_main_process)
    if source.skipped and accelerator.is_main_process:
        progress.message(f"[yellow]skipped {len(source.skipped)} unreadable files "
                         f"(first: {source.skipped[0]})")
    runner = StepRunner(model, model, optimizer, accelerator, recipe)
    metrics_file = run_dir / "metrics.jsonl"

    def save(step: int) -> None:
        rngs = [None] * world
        if world > 1:
            torch.distributed.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if accelerator.is_main_process:
            atomic_save({"model": accelerator.unwrap_model(model).state_dict(),
                         "optimizer": optimizer.state_dict(), "step": step, "rng": rngs,
                         "world_size": world}, checkpoint_path)
        accelerator.wait_for_everyone()

    step = start_step
    last_loss = None
    window_start, window_samples = time.perf_counter(), 0
    finished = True
    model.train()
    collapse_watch = CollapseWatch()
    if metrics_file.exists():  # a resumed run remembers its peak (and a warning already given)
        for line in metrics_file.read_text().splitlines():
            record = json.loads(line)
            collapse_watch.update(record.get("step", 0), record.get("embed_std"))
    with StopFlag() as stop:
        while step < total:
            step_loss, out, samples, schedules = runner.run(batches, step, total)
            window_samples += samples * world
            step += 1
            progress.advance(step)

            if step % cfg.log_every == 0 or step == total:
                mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
                last_loss = mean_loss
                elapsed = time.perf_counter() - window_start
                record = {"step": step, "loss": mean_loss, **schedules,
                          "samples_per_s": window_samples / elapsed,
                          "data_wait_fraction": runner.data_wait / elapsed}
                if "embeddings" in out:
                    record.update(collapse_stats(out["embeddings"]))
                    warning = collapse_watch.update(step, record.get("embed_std"))
                    if warning and accelerator.is_main_process:
                        progress.warn(warning)
                for key, value in out.items():
                    if key not in ("loss", "embeddings") and torch.is_tensor(value) \
                            and value.numel() == 1:
                        record[key] = value.item()
                if accelerator.is_main_process:
                    with metrics_file.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                progress.log(step, record)
                window_start, window_samples, runner.data_wait = time.perf_counter(), 0, 0.0

            stopping = stop.raised or step == stop_after
            if world > 1 and step % cfg.log_every == 0:
                # Agree on stopping only at log steps: a per-step reduce would be a host sync.
                flag = torch.tensor(float(stopping), device=device)
                stopping = accelerator.reduce(flag, reduction="sum").item() > 0
            elif world > 1:
                stopping = step == stop_after
            if stopping or step % cfg.checkpoint_every == 0 or step == total:
                save(step)
            if stopping and step < total:
                finished = False
                progress.message(f"[yellow]stopped by signal at step {step}; checkpoint saved. "
                                 f"Continue with: jepactl pretrain {run_dir} --resume")
                break
    progress.close()
    del batches, loader
    accelerator.end_training() if hasattr(accelerator, "end_training") else None
    return TrainResult(run_dir, step, finished, last_loss)
