"""``jepactl bench``: steady-state throughput of a recipe's pretraining step, and where it goes.

It runs the trainer's own step (``step.StepRunner``) on synthetic inputs of the recipe's
shape (or ``--data``), after warm-up, and reports samples/s, a step-time breakdown (data wait,
mask sampling, forward, backward, optimizer, EMA), peak memory, model FLOPs per sample counted
with ``torch.utils.flop_counter`` and the achieved FLOP/s as a fraction of this machine's dense
matmul FLOP/s in the same dtype, measured in the same run.

Phase timings synchronise the device after each phase, so they add a little overhead the real
trainer does not have; the headline samples/s comes from a separate, unsynchronised pass.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from dataclasses import replace

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from jepactl.data.sampling import BatchPlan
from jepactl.errors import UserError
from jepactl.micro_batch import PeakMeter, loader_workers
from jepactl.precision import DTYPES, PRECISIONS, resolve_precision
from jepactl.recipe import Recipe
from jepactl.registry import method_spec
from jepactl.step import StepRunner, build_optimizer
from jepactl.train import build_method

PHASES = ("data", "forward", "backward", "optimizer", "ema")

# Data-sheet dense peaks (no sparsity), TFLOP/s, by a substring of the CUDA device name; the
# first match wins, so the PCIe H100 comes before the SXM one. fp32 is the non-tensor-core rate
# (TF32 off). MFU against these is the figure papers quote; ``mfu`` is against the matmul rate
# measured in the same run, which is what the code can reach on that machine.
SPEC_PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def spec_peak_tflops(name: str, precision: str) -> float | None:
    """Return the data-sheet dense peak for device ``name`` in ``precision``, if known."""
    for key, peaks in SPEC_PEAK_TFLOPS:
        if key in name:
            return peaks.get(precision)
    return None


def bench_data(recipe: Recipe, data: str | None):
    """Return (dataset, collate) for the benchmark: synthetic unless ``data`` is given.

    A method without synthetic data (the fact methods, which generate their facts when
    ``data.path`` is null) reads the recipe's own data.
    """
    spec = method_spec(recipe.method)
    if data is None and spec.synthetic_data is not None:
        return spec.synthetic_data(recipe)
    pretrain_data = spec.require("pretrain_data")
    dataset, collate, _ = pretrain_data(recipe, data if data is not None else recipe.data.path)
    return dataset, collate


def matmul_peak_flops(
    device: torch.device, precision: str, size: int = 2048, seconds: float = 1.5
) -> float:
    """Return this device's measured dense matmul FLOP/s in ``precision`` (best of runs)."""
    dtype = DTYPES.get(precision, torch.float32)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def count_flops(runner: StepRunner, batch: dict) -> int:
    """Return the FLOPs of one forward + backward of the method on ``batch`` (matmuls, convs)."""
    counter = FlopCounterMode(display=False)
    with counter:
        with runner.autocast:
            out = runner.forward(batch)
        out["loss"].backward()
    runner.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_bench(
    recipe: Recipe,
    steps: int = 20,
    warmup: int = 5,
    batch_size: int | None = None,
    precision: str | None = None,
    data: str | None = None,
    repeats: int = 3,
    peak_tflops: float | None = None,
) -> dict:
    """Benchmark ``recipe``'s training step; return throughput, breakdown, memory and MFU.

    ``peak_tflops`` is the device's data-sheet dense peak in the benchmark's dtype; without it
    a known CUDA device's is looked up (``SPEC_PEAK_TFLOPS``). It adds ``mfu_vs_spec``.
    """
    if steps < 1 or warmup < 0 or repeats < 1:
        raise UserError("--steps and --repeats must be positive, --warmup non-negative")
    if peak_tflops is not None and peak_tflops <= 0:
        raise UserError(f"--peak-tflops must be positive, got {peak_tflops}")
    spec = method_spec(recipe.method)
    spec.require("build")  # an analysis without a torch module has no step to time
    train = replace(
        recipe.train,
        batch_size=batch_size or recipe.train.batch_size,
        precision=precision or recipe.train.precision,
    )
    if train.precision not in PRECISIONS:
        raise UserError(
            f"--precision must be one of {', '.join(PRECISIONS)}, got '{train.precision}'"
        )
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    device = accelerator.device
    train = replace(train, precision=resolve_precision(train.precision, device)[0])
    recipe = replace(recipe, train=train)
    # Data first: a table's preprocessing is fitted by reading it, and the model's tokenizer is
    # built from that fit.
    dataset, collate = bench_data(recipe, data)
    method = build_method(spec, recipe)
    optimizer = build_optimizer(method, recipe, device)
    model, optimizer = accelerator.prepare(method.to(device), optimizer)
    # The benchmarked step is one forward/backward of the whole --batch-size: no micro-batches.
    runner = StepRunner(model, model, optimizer, accelerator, recipe)
    model.train()

    plan = BatchPlan(len(dataset), train.batch_size, train.seed)
    workers = loader_workers(train.num_workers)
    loader = DataLoader(
        dataset,
        batch_sampler=plan,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    batches = iter(loader)
    total = warmup + steps * (repeats + 1) + 1
    step = 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    for _ in range(warmup):
        runner.run(batches, step, total)
        step += 1
    sync()

    # Headline: unsynchronised steps exactly as the trainer runs them, median of repeats. The
    # meter gives the memory the steps add to the resting process (model, optimizer state,
    # loader): activations, gradients and the batch, what a method's cost claim is about.
    meter = PeakMeter(device)
    resting = meter.current()
    rates, waits = [], []
    with meter:
        for _ in range(repeats):
            runner.data_wait = 0.0
            start = time.perf_counter()
            for _ in range(steps):
                runner.run(batches, step, total)
                step += 1
            sync()
            elapsed = time.perf_counter() - start
            rates.append(steps * train.batch_size / elapsed)
            waits.append(runner.data_wait / elapsed)

    # Breakdown: the same step with a device sync after each phase.
    phase_time = dict.fromkeys(PHASES, 0.0)
    mark = [time.perf_counter()]

    def timer(phase: str) -> None:
        sync()
        now = time.perf_counter()
        phase_time[phase] += now - mark[0]
        mark[0] = now

    for _ in range(steps):
        mark[0] = time.perf_counter()
        runner.run(batches, step, total, timer=timer)
        step += 1
    step_time = sum(phase_time.values())

    # Mask sampling happens in the collate (DataLoader workers); time it on its own.
    mask_time = mask_sampling_seconds(collate, dataset, train.batch_size, steps)

    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
    flops = count_flops(runner, batch) / train.batch_size
    peak = matmul_peak_flops(device, train.precision)
    rate = statistics.median(rates)
    achieved = flops * rate
    del batches, loader
    name = device_name(device)
    spec = (
        peak_tflops
        if peak_tflops is not None
        else spec_peak_tflops(name, train.precision)
        if device.type == "cuda"
        else None
    )
    return {
        "recipe": recipe.name,
        "device": str(device),
        "device_name": name,
        "precision": train.precision,
        "batch_size": train.batch_size,
        "steps": steps,
        "repeats": repeats,
        "samples_per_s": rate,
        "samples_per_s_runs": [round(r, 2) for r in rates],
        "step_time_s": train.batch_size / rate,
        **{f"{p}_fraction": phase_time[p] / step_time for p in PHASES},
        "data_wait_fraction": statistics.median(waits),
        "mask_sampling_fraction": (mask_time / steps) / (train.batch_size / rate),
        "peak_memory_mb": peak_memory_bytes(device) / 2**20,
        "step_memory_mb": max(0, meter.peak - resting) / 2**20,
        "gflops_per_sample": flops / 1e9,
        "achieved_tflops": achieved / 1e12,
        "matmul_peak_tflops": peak / 1e12,
        "mfu": achieved / peak,
        "spec_peak_tflops": spec,
        "mfu_vs_spec": achieved / (spec * 1e12) if spec else None,
    }


def mask_sampling_seconds(collate, dataset, batch_size: int, batches: int) -> float:
    """Return the seconds the collate spends on ``batches`` batches (masks + stacking)."""
    if collate is None:
        return 0.0
    samples = [dataset[(i, i, i)] for i in range(batch_size)]
    start = time.perf_counter()
    for b in range(batches):
        for s in samples:
            if "batch_seed" in s:
                s["batch_seed"] = b
        collate(samples)
    return time.perf_counter() - start
