"""The trainer: the only training loop for pretraining, shared by every method.

Accelerate provides process groups, DDP and device placement (one CPU, one GPU, ``accelerate
launch`` multi-GPU/multi-node, gloo on CPU). Precision is torch autocast (bf16 on CPU and CUDA).
Schedules are pure functions of the optimizer step; the data order is a pure function of
(seed, micro-batch, rank); checkpoints hold model, target, optimizer, step and RNG. Together that
makes ``--resume`` continue exactly where the run stopped. SIGTERM/SIGUSR1 save and exit 0.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from jepactl.checkpoint import (
    atomic_write_text,
    find_checkpoints,
    load_latest_checkpoint,
    load_model_state,
    remove_interrupted_saves,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from jepactl.compile import compile_blocks
from jepactl.data.sampling import BatchPlan
from jepactl.errors import UserError
from jepactl.micro_batch import (
    WORKER_BYTES,
    MicroPlan,
    PeakMeter,
    batch_bytes,
    batch_summary,
    loader_workers,
    optimizer_state_bytes,
    plan_micro_batches,
    refit_after_first_step,
    requested_workers,
    slice_batch,
    split_sizes,
)
from jepactl.monitor import CollapseWatch, collapse_stats
from jepactl.output_paths import write_errors_name
from jepactl.precision import resolve_precision
from jepactl.progress import TrainProgress
from jepactl.recipe import Recipe, cpu_recipe
from jepactl.registry import method_spec
from jepactl.run_evaluation import BestCheckpoint, start_online_probe
from jepactl.run_lock import RunLock
from jepactl.runs import CHECKPOINT_DIR, write_run_files
from jepactl.step import StepRunner, build_optimizer, trial_step
from jepactl.trackers import check_trackers, start_trackers, tracker_folder

log = logging.getLogger("jepactl")


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    finished: bool  # False when stopped by a signal (resume with --resume)
    last_loss: float | None


class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGINT; the loop checks it between steps, saves and exits cleanly.

    Ctrl-C (SIGINT) saves like a scheduler's signal does; a second Ctrl-C quits at once, without
    a new checkpoint (the previous one is intact: saves are atomic).
    """

    def __init__(self) -> None:
        self.raised = False
        self.previous = {}
        self.owner_pid = os.getpid()

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        # A DataLoader worker forked at an epoch boundary inherits this handler until its
        # worker_init_fn ignores the signals; it must neither print nor decide anything.
        if os.getpid() != self.owner_pid:
            return
        if signum == signal.SIGINT and self.raised:
            raise KeyboardInterrupt
        # Set before printing: a second Ctrl-C that lands during the write runs this handler
        # again, nested, and must find the first one already recorded.
        self.raised = True
        if signum == signal.SIGINT:
            sys.stderr.write(
                "\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit now)\n"
            )

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's signature
    """DataLoader workers ignore SIGTERM/SIGUSR1/SIGINT: a scheduler (or Ctrl-C on a terminal)
    signals the whole process group, and the main process must outlive its workers long enough
    to save the checkpoint."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def read_metrics(path: Path) -> list[dict]:
    """Return the records of ``metrics.jsonl``; a torn last line (the process died mid-write)
    is dropped with a warning, a damaged line elsewhere is an error naming it."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise UserError(
                    f"'{path}' line {number} is not JSON; the file is damaged "
                    "(remove that line to continue the run)"
                ) from None
            log.warning("dropped the torn last line of %s (the run stopped while writing it)", path)
    return records


def _truncate_metrics(path: Path, step: int) -> list[dict]:
    """Drop metric records logged after ``step`` (written before a crash, not in the
    checkpoint) and a torn last line; return the records kept."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    if path.exists():
        atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), path)
    return kept


def build_method(spec, recipe: Recipe) -> nn.Module:
    """Build the recipe's method with ``spec.build`` from the train seed (identical weights on
    every process), switch on activation checkpointing in every module that supports it if the
    recipe asks, and compile its transformer blocks if ``train.compile``."""
    torch.manual_seed(recipe.train.seed)
    method = spec.build(recipe)
    if recipe.train.compile:
        compile_blocks(method)
    if recipe.train.activation_checkpointing:
        for sub in method.modules():
            if hasattr(sub, "activation_checkpointing"):
                sub.activation_checkpointing = True
    return method


def pretrain(
    recipe: Recipe,
    run_dir: Path,
    resume: bool = False,
    quiet: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``recipe`` into ``run_dir``; with ``resume`` continue from its last checkpoint.

    ``stop_after`` stops at that step exactly as a preemption signal would (checkpoint, return
    unfinished), keeping the schedules of the full run. The run folder has one writer: the
    main process holds its lock (``run_lock.py``) for the whole run.
    """
    # The launchers (torchrun, accelerate launch) set RANK; the lock is taken before the process
    # group exists, so that a second run into the same folder stops before doing any work.
    main_process = int(os.environ.get("RANK", "0")) == 0
    with RunLock(run_dir) if main_process else contextlib.nullcontext():
        return _pretrain(recipe, run_dir, resume, quiet, stop_after)


def _pretrain(
    recipe: Recipe, run_dir: Path, resume: bool, quiet: bool, stop_after: int | None
) -> TrainResult:
    spec = method_spec(recipe.method)
    cfg = recipe.train
    trackers = check_trackers(cfg.trackers)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        log_with=trackers or None,
        project_dir=str(tracker_folder(run_dir)) if trackers else None,
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    precision, precision_notice = resolve_precision(cfg.precision, device)

    checkpoint_dir = run_dir / CHECKPOINT_DIR
    state = None
    if resume:
        if not find_checkpoints(checkpoint_dir):
            raise UserError(f"cannot resume: '{checkpoint_dir}' holds no checkpoint")
        if accelerator.is_main_process:
            remove_interrupted_saves(checkpoint_dir)
        state, checkpoint_path = load_latest_checkpoint(checkpoint_dir)
    elif find_checkpoints(checkpoint_dir):
        raise UserError(
            f"run folder '{run_dir}' already has a checkpoint; "
            "pass --resume to continue it or choose another --out"
        )

    dataset, collate, source = spec.require("pretrain_data")(recipe, recipe.data.path)

    method = build_method(spec, recipe)
    optimizer = build_optimizer(method, recipe, device)
    start_step = 0
    if state is not None:
        load_model_state(method, state["model"], checkpoint_path)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise UserError(
                f"checkpoint '{checkpoint_path}': its optimizer state does not "
                f"match the recipe's ({err})"
            ) from None
        start_step = int(state["step"])
    method.to(device)
    model, optimizer = accelerator.prepare(method, optimizer)
    workers = loader_workers(cfg.num_workers)
    sampler = BatchPlan(len(dataset), cfg.batch_size, cfg.seed, rank, world, start=start_step)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
    batches = iter(loader)
    first = next(batches)  # the trial steps measure memory on it; it is still step 1's batch
    batches = itertools.chain([first], batches)
    micro_plan = plan_micro_batches(
        cfg.micro_batch_size,
        cfg.batch_size,
        lambda size: trial_step(model, accelerator, recipe, slice_batch(first, 0, size), precision),
        device,
        optimizer_state_bytes(model, optimizer),
        reserve_bytes=workers * (2 * batch_bytes(first) + WORKER_BYTES),
        hint=cpu_recipe(recipe),
    )
    if world > 1:  # every process must cut its batch the same way (DDP syncs the last piece)
        smallest = torch.tensor(micro_plan.micro_batch_size, device=device)
        torch.distributed.all_reduce(smallest, op=torch.distributed.ReduceOp.MIN)
        micro = int(smallest.item())
        micro_plan = MicroPlan(
            cfg.batch_size,
            micro,
            len(split_sizes(cfg.batch_size, micro)),
            micro_plan.chosen_by + " (smallest over processes)",
        )
    # The RNG is set last, right before step 1: creating the loader's iterator draws its base
    # seed from the global RNG, so setting it earlier would shift a resumed run's dropout draws
    # by one against the uninterrupted run's (the trial steps restore the RNG they use).
    if state is not None:
        set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    else:
        torch.manual_seed(cfg.seed + 1000 * rank)
    setup = {
        "micro_batch": micro_plan.as_dict(),
        "num_workers": workers,
        "precision": precision,
        "global_batch_size": cfg.batch_size * world,
    }

    if accelerator.is_main_process:
        write_run_files(run_dir, recipe, world, str(device), setup)
        _truncate_metrics(run_dir / "metrics.jsonl", start_step)
    accelerator.wait_for_everyone()

    total = cfg.max_steps
    progress = TrainProgress(
        total, start_step, quiet or not accelerator.is_main_process, detail=micro_plan.describe()
    )
    if accelerator.is_main_process:
        progress.message(batch_summary(cfg.batch_size, world, micro_plan, precision))
        if precision_notice:
            progress.message(f"[yellow]{precision_notice}")
    if source.skipped and accelerator.is_main_process:
        progress.message(
            f"[yellow]skipped {len(source.skipped)} unreadable files (first: {source.skipped[0]})"
        )
    for notice in getattr(source, "notices", ()) if accelerator.is_main_process else ():
        progress.message(f"[yellow]{notice}")  # what a reader filled in (no intensity, ...)
    if workers < requested_workers(cfg.num_workers) and accelerator.is_main_process:
        progress.message(
            f"{workers} data-loader worker(s): train.num_workers={cfg.num_workers} "
            f"capped at this process's CPUs minus one"
        )
    runner = StepRunner(model, model, optimizer, accelerator, recipe, micro_plan, precision)
    if state is not None and runner.scaler is not None and "grad_scaler" in state:
        runner.scaler.load_state_dict(state["grad_scaler"])

    def record_replan(new_plan: MicroPlan) -> None:
        setup["micro_batch"] = new_plan.as_dict()
        progress.detail = new_plan.describe()
        if accelerator.is_main_process:
            write_run_files(run_dir, recipe, world, str(device), setup)

    runner.on_replan = record_replan if world == 1 else None
    runner.retry_on_oom = world == 1  # one process alone cannot re-cut the batch under DDP
    metrics_file = run_dir / "metrics.jsonl"

    def save(step: int) -> None:
        rngs = [None] * world
        if world > 1:
            torch.distributed.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if accelerator.is_main_process:
            save_checkpoint(
                checkpoint_dir,
                step,
                {
                    "model": accelerator.unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "rng": rngs,
                    "world_size": world,
                    **(
                        {"grad_scaler": runner.scaler.state_dict()}
                        if runner.scaler is not None
                        else {}
                    ),
                },
                keep=recipe.checkpoint.keep,
            )
        accelerator.wait_for_everyone()

    step = start_step
    last_loss = None
    window_start, window_samples = time.perf_counter(), 0
    finished = True
    model.train()
    collapse_watch = CollapseWatch()
    start_trackers(accelerator, trackers, run_dir, recipe)
    earlier = read_metrics(metrics_file)
    for record in earlier:  # a resumed run remembers its peak (and warning)
        collapse_watch.update(record.get("step", 0), record.get("embed_std"))
    which = getattr(recipe.probe, "which", "target")
    fresh = (accelerator.unwrap_model(model).encoder(which), precision) if step == 0 else None
    online, every = start_online_probe(recipe, run_dir, total, accelerator, progress, fresh)
    best = BestCheckpoint(recipe, online is not None, earlier)
    with StopFlag() as stop:
        while step < total:
            if step == start_step:  # the first step's real peak checks the trial's prediction
                with PeakMeter(device) as meter:
                    step_loss, out, samples, schedules = runner.run(batches, step, total)
                checked = refit_after_first_step(runner.plan, meter.peak, world == 1)
                if checked.micro_batch_size != runner.plan.micro_batch_size:
                    log.warning(
                        "the first step peaked at %.1f GiB, above the %.1f GiB allowed: "
                        "continuing with %s",
                        checked.first_step_peak_gib,
                        checked.allowed_peak_gib,
                        checked.describe(),
                    )
                runner.plan = checked
                record_replan(checked)
            else:
                step_loss, out, samples, schedules = runner.run(batches, step, total)
            window_samples += samples * world
            step += 1
            progress.advance(step)

            if step % cfg.log_every == 0 or step == total:
                mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
                last_loss = mean_loss
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": step,
                    "loss": mean_loss,
                    **schedules,
                    "samples_per_s": window_samples / elapsed,
                    "data_wait_fraction": runner.data_wait / elapsed,
                }
                if "embeddings" in out:
                    record.update(collapse_stats(out["embeddings"]))
                    warning = collapse_watch.update(step, record.get("embed_std"))
                    if warning and accelerator.is_main_process:
                        progress.warn(warning)
                for key, value in out.items():
                    if (
                        key not in ("loss", "embeddings")
                        and torch.is_tensor(value)
                        and value.numel() == 1
                    ):
                        record[key] = value.item()
                # Only rank 0 holds the probe (``online`` is None elsewhere), but every rank
                # knows ``every``: all of them wait at the same steps while rank 0 scores.
                if every and (step % every == 0 or step == total):
                    if online is not None:
                        encoder = accelerator.unwrap_model(model).encoder(which)
                        record.update(online.score(encoder, precision))
                    accelerator.wait_for_everyone()
                checkpointed = step % cfg.checkpoint_every == 0 or step == total
                if accelerator.is_main_process and best.improves(record, checkpointed):
                    best.save(checkpoint_dir, step, accelerator.unwrap_model(model))
                if accelerator.is_main_process:
                    with write_errors_name(metrics_file), metrics_file.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                if trackers:
                    scalars = {k: v for k, v in record.items() if k != "step"}
                    accelerator.log(scalars, step=step)  # the main process's trackers only
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
                progress.message(
                    f"[yellow]stopped by signal at step {step}; checkpoint saved. "
                    f"Continue with: jepactl pretrain {run_dir} --resume"
                )
                break
    progress.close()
    del batches, loader
    accelerator.end_training() if hasattr(accelerator, "end_training") else None
    return TrainResult(run_dir, step, finished, last_loss)
