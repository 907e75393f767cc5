"""Micro-batches: run the recipe's effective batch on the machine the run starts on.

``train.batch_size`` is a recipe's *effective* batch: the samples behind one optimizer step, per
process. The learning rate, EMA and schedules are tied to it, so it never changes with the
hardware. What changes is how that batch is cut for the forward and backward passes:
``train.micro_batch_size`` samples at a time, gradients accumulated over the pieces, one
optimizer step per effective batch. The loss of each piece is weighted by its share of the
batch, so the step's gradient is the big batch's gradient up to float summation order.

``train.micro_batch_size: auto`` measures instead of guessing. Two trial forward/backward
passes on the first batch's first ``m1 < m2`` samples give the process's peak memory at both
sizes (peak RSS on CPU, reset through ``/proc/self/clear_refs``; the CUDA allocator's peak on
GPU). Peak memory is close to affine in the micro-batch (weights, gradients and optimizer state
fixed; activations per sample), so the two points give the largest micro-batch whose peak stays
under the memory that is free, less head-room for DataLoader workers and for the optimizer
state that the first step allocates. The batch is then cut into equal pieces of at most that
size. If even one sample per piece cannot fit, the run stops before its first step with one
line saying how much it needs and how much there is: the system's out-of-memory killer gives
no such line, and on CPU nothing can catch it once it strikes. A CUDA out-of-memory error in a
step (fragmentation, a longer batch than the trial's) halves the micro-batch and retries the
step once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from jepactl.errors import UserError

GIB = 1024**3
# Peak memory may use this share of what is free; the rest absorbs allocator fragmentation,
# the trial's measurement error and whatever else the machine starts meanwhile.
SAFETY = 0.85
# A run's peak grows past its first step's (allocator fragmentation, the optimizer's state): on
# the paper recipes the whole run's peak RSS was up to 20 % above the trials' prediction
# (benchmarks/RESULTS.md, "Paper recipes on a 2-core, 24 GB machine"), so a plan keeps this
# factor of head-room on the step's own memory (above the resting process).
GROWTH = 1.2
# Private memory of one DataLoader worker process beyond the batches it holds (interpreter,
# torch, a reader's caches): an estimate with margin, not a measurement. Workers are forked, so
# most of their pages are shared with the main process.
WORKER_BYTES = 384 * 1024**2
TRIAL_SIZES = (2, 8)


@dataclass
class MicroPlan:
    """How an optimizer step's batch is cut, and why (recorded in env.json)."""

    batch_size: int  # the effective batch per process
    micro_batch_size: int
    accumulation: int  # micro-batches per optimizer step
    chosen_by: str  # "recipe", "auto: whole batch fits", "auto: measured", ...
    predicted_peak_gib: float | None = None  # at the chosen micro-batch, with head-room
    allowed_peak_gib: float | None = None
    trial_peaks_gib: list[tuple[int, float]] | None = None  # (micro-batch, peak) measured
    first_step_peak_gib: float | None = None  # measured in the run's first step
    resting_gib: float | None = None  # the process before the trials

    def sizes(self) -> list[int]:
        return split_sizes(self.batch_size, self.micro_batch_size)

    def describe(self) -> str:
        if self.accumulation == 1:
            return f"batch {self.batch_size} (one micro-batch)"
        return (
            f"batch {self.batch_size} = {self.accumulation} micro-batches of "
            f"{self.micro_batch_size}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def batch_summary(batch_size: int, world: int, plan: MicroPlan, precision: str) -> str:
    """The start-of-run line: per-process and global batch, the cut, the precision.

    ``train.batch_size`` is per process, so the optimizer's global batch grows with the
    number of processes; saying both at start avoids a silent change of the recipe's lr scale.
    """
    cut = (
        "one micro-batch"
        if plan.accumulation == 1
        else f"{plan.accumulation} micro-batches of {plan.micro_batch_size}"
    )
    return (
        f"batch {batch_size} per process x {world} process(es) = global batch "
        f"{batch_size * world} per optimizer step ({cut}); precision {precision}"
    )


def split_sizes(batch_size: int, micro_batch_size: int) -> list[int]:
    """Return sizes of equal pieces (differing by at most one) of at most ``micro_batch_size``."""
    pieces = math.ceil(batch_size / max(1, micro_batch_size))
    base, extra = divmod(batch_size, pieces)
    return [base + (1 if i < extra else 0) for i in range(pieces)]


def batch_length(batch: dict) -> int:
    return next(v for v in batch.values() if torch.is_tensor(v)).shape[0]


def slice_batch(batch: dict, start: int, stop: int) -> dict:
    """Return samples ``start:stop`` of a collated batch (every tensor is batch-first)."""
    return {k: v[start:stop] if torch.is_tensor(v) and v.ndim else v for k, v in batch.items()}


def batch_bytes(batch: dict) -> int:
    return sum(v.nelement() * v.element_size() for v in batch.values() if torch.is_tensor(v))


def requested_workers(setting: int | str) -> int:
    """Return the DataLoader workers a recipe asks for (``auto``: 8)."""
    wanted = 8 if setting == "auto" else int(setting)
    if wanted < 0:
        raise UserError(f"recipe key 'train.num_workers': must be auto or >= 0, got {wanted}")
    return wanted


def loader_workers(setting: int | str) -> int:
    """Return DataLoader workers: ``requested_workers`` capped at the CPUs this process may use
    minus one, so a paper recipe's 8 workers never start on 2 cores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(requested_workers(setting), max(0, (cpus or 1) - 1))


# ------------------------------------------------------------------------------------ memory


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``), so that memory a
    step needs shows up as growth of the resident size instead of reuse of freed pages."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement is only less tight
        pass


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def _cgroup_free_bytes() -> int | None:
    """Return what the process's memory cgroup still allows, or None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(0, int(limit) - usage)
    return None


def free_host_bytes() -> int:
    """Return the RAM this process can still take: MemAvailable, lowered by a cgroup limit."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
        free = int(re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.M).group(1)) * 1024
    except (OSError, AttributeError):  # not Linux
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = _cgroup_free_bytes()
    return free if cgroup is None else min(free, cgroup)


class PeakMeter:
    """Peak memory of this process over a block: ``with meter: ...`` then ``meter.peak``.

    CUDA: the caching allocator's peak of allocated bytes. CPU: peak resident set size;
    Linux resets the high-water mark through ``/proc/self/clear_refs``, and where that is not
    allowed a thread samples the resident size every 2 ms instead.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def current(self) -> int:
        """Memory held now (after giving freed heap pages back on CPU)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        release_free_heap()
        return _status_kib("VmRSS") * 1024

    def __enter__(self) -> "PeakMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        release_free_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._hwm = True
        except OSError:
            self._hwm, self.peak = False, self.current()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.current())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._hwm:
            self.peak = _status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._sampler.join()
            self.peak = max(self.peak, self.current())


def allowed_peak_bytes(device: torch.device, reserve: int) -> int:
    """Return the peak this process may reach: what it holds now plus a safe share of what is
    free, less ``reserve`` (DataLoader workers on the host)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.memory_allocated(device) + int(SAFETY * (free + cached))
    release_free_heap()
    return _status_kib("VmRSS") * 1024 + int(SAFETY * free_host_bytes()) - reserve


def optimizer_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """AdamW's two moments (allocated by the first step, after the trial) plus the foreach
    update's temporaries, about one more copy of the trained weights."""
    if optimizer.state:
        return 0
    trained = sum(p.nelement() * p.element_size() for p in model.parameters() if p.requires_grad)
    return 3 * trained


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def plan_micro_batches(
    setting: int | str,
    batch_size: int,
    trial: Callable[[int], None],
    device: torch.device,
    extra_bytes: int,
    reserve_bytes: int,
    hint: str = "",
) -> MicroPlan:
    """Return how to cut a ``batch_size`` step into micro-batches on ``device``.

    ``trial(m)`` runs one forward/backward on ``m`` samples of the first batch and leaves no
    trace (the caller restores RNG and clears gradients). ``extra_bytes``: memory the real step
    allocates that the trial does not (optimizer state). ``reserve_bytes``: host memory kept
    for DataLoader workers. ``hint`` names a smaller recipe for the error line.
    """
    wanted = None
    if setting != "auto":
        wanted = int(setting)
        if wanted < 1:
            raise UserError(
                f"recipe key 'train.micro_batch_size': must be auto or a positive "
                f"integer, got {wanted}"
            )
        wanted = min(wanted, batch_size)
    allowed = allowed_peak_bytes(device, reserve_bytes)
    small, large = (min(batch_size, m) for m in TRIAL_SIZES)
    if (wanted or batch_size) <= small:  # nothing to measure: the first step is its own trial
        micro = wanted or batch_size
        return MicroPlan(
            batch_size,
            micro,
            len(split_sizes(batch_size, micro)),
            "recipe" if wanted else "auto: whole batch (small)",
        )
    meter = PeakMeter(device)
    resting = meter.current()
    with meter:
        trial(small)
    points = [(small, meter.peak)]
    # The first point bounds the per-sample cost from above (everything above the resting
    # memory counted as activations); measure the second size only if that bound says it fits.
    upper_slope = max(1, (points[0][1] - resting) / small)
    bound = points[0][1] + upper_slope * (large - small) + extra_bytes
    if large > small and with_headroom(bound, resting) <= allowed:
        with PeakMeter(device) as meter:
            trial(large)
        points.append((large, meter.peak))
    if len(points) == 2:
        (m1, p1), (m2, p2) = points
        slope = max((p2 - p1) / (m2 - m1), 1.0)
    else:
        slope = upper_slope
    intercept = points[0][1] - slope * points[0][0] + extra_bytes
    fits = largest_fitting(intercept, slope, resting, allowed)
    advice = f"a smaller recipe such as {hint}" if hint else "a smaller model"
    if fits < 1:
        need = with_headroom(intercept + slope, resting)
        raise UserError(
            f"not enough memory: one training sample needs a peak of {_gib(need)} on "
            f"{device.type} and {_gib(max(allowed, 0))} is available to this run; use "
            f"{advice}, fewer loader workers (train.num_workers), or train.precision=bf16"
        )
    if wanted is not None and wanted > fits:
        need = with_headroom(intercept + slope * wanted, resting)
        raise UserError(
            f"not enough memory for train.micro_batch_size={wanted}: its step needs a peak of "
            f"{_gib(need)} on {device.type} and {_gib(allowed)} is available to this run; set "
            f"train.micro_batch_size={fits} (or auto), or use {advice}"
        )
    micro = wanted or max(split_sizes(batch_size, min(fits, batch_size)))
    chosen_by = (
        "recipe"
        if wanted
        else "auto: whole batch fits"
        if micro == batch_size
        else "auto: measured"
    )
    return MicroPlan(
        batch_size,
        micro,
        len(split_sizes(batch_size, micro)),
        chosen_by,
        round(with_headroom(intercept + slope * micro, resting) / GIB, 2),
        round(allowed / GIB, 2),
        [(m, round(peak / GIB, 3)) for m, peak in points],
        resting_gib=round(resting / GIB, 3),
    )


def with_headroom(peak: float, resting: float) -> float:
    """Return ``peak`` with ``GROWTH`` head-room on the step's own memory (above ``resting``)."""
    return resting + GROWTH * max(0.0, peak - resting)


def largest_fitting(intercept: float, slope: float, resting: float, allowed: float) -> int:
    """Largest m with ``with_headroom(intercept + slope * m, resting) <= allowed``."""
    return int(((allowed - resting) / GROWTH - (intercept - resting)) // slope)


def refit_after_first_step(plan: MicroPlan, peak: int, may_shrink: bool = True) -> MicroPlan:
    """Return the plan corrected by the first real step's measured ``peak``.

    The trial passes are small; at the full micro-batch the C allocator keeps more freed
    memory resident (glibc raises its mmap threshold as large blocks are freed), and the
    optimizer allocates its state. When the first step (with ``GROWTH`` head-room) peaked above
    the allowed memory, the line through the smallest trial and that step gives the per-sample
    cost that the real step shows, and an automatic micro-batch shrinks to fit it; otherwise
    the plan stands, with the peak kept.
    ``may_shrink`` is False under DDP, where every process must keep the same cut.
    """
    observed = round(peak / GIB, 2)
    if not plan.trial_peaks_gib or plan.allowed_peak_gib is None:
        return replace(plan, first_step_peak_gib=observed)
    allowed, resting = plan.allowed_peak_gib * GIB, (plan.resting_gib or 0.0) * GIB
    small, small_peak = plan.trial_peaks_gib[0]
    small_peak *= GIB
    if (
        with_headroom(peak, resting) <= allowed
        or plan.micro_batch_size <= small
        or not may_shrink
        or not plan.chosen_by.startswith("auto")
    ):
        return replace(plan, first_step_peak_gib=observed)
    slope = max((peak - small_peak) / (plan.micro_batch_size - small), 1.0)
    intercept = small_peak - slope * small
    fits = max(1, largest_fitting(intercept, slope, resting, allowed))
    micro = max(split_sizes(plan.batch_size, min(fits, plan.micro_batch_size)))
    predicted = with_headroom(intercept + slope * micro, resting)
    return replace(
        plan,
        micro_batch_size=micro,
        accumulation=len(split_sizes(plan.batch_size, micro)),
        chosen_by=plan.chosen_by + ", shrunk after the first step's peak",
        predicted_peak_gib=round(predicted / GIB, 2),
        first_step_peak_gib=observed,
    )
