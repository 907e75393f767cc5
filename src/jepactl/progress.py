"""Training progress on stderr: a live rich bar on a terminal, plain lines in cluster logs."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from jepactl.command_log import plain


def _fmt(metrics: dict, detail: str = "") -> str:
    parts = [f"loss {metrics['loss']:.4f}", f"lr {metrics['lr']:.2e}"]
    if "momentum" in metrics:
        parts.append(f"ema {metrics['momentum']:.4f}")
    parts.append(f"{metrics['samples_per_s']:.1f} samples/s")
    if detail:
        parts.append(detail)
    return "  ".join(parts)


class TrainProgress:
    """Shows step, loss, lr, EMA momentum, samples/s, ``detail`` (how the batch is cut) and ETA;
    silent when ``quiet``."""

    def __init__(
        self, total: int, start: int, quiet: bool = False, title: str = "pretrain", detail: str = ""
    ) -> None:
        self.total, self.start, self.quiet, self.title = total, start, quiet, title
        self.detail = detail
        self.console = Console(stderr=True)
        self.live = (not quiet) and sys.stderr.isatty()
        self.bar: Progress | None = None
        self.started = time.perf_counter()
        if self.live:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task(title, total=total, completed=start, stats="")
            self.bar.start()

    def advance(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step)

    def log(self, step: int, metrics: dict) -> None:
        if self.quiet:
            return
        done = step - self.start
        elapsed = time.perf_counter() - self.started
        eta = elapsed / max(done, 1) * (self.total - step)
        line = f"[{self.title}] step {step}/{self.total}  {_fmt(metrics, self.detail)}"
        line += f"  eta {eta:.0f}s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=_fmt(metrics, self.detail))
            plain(line)  # the run's log file reads like a cluster log, not bar repaints
            return
        print(line, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text)
            if self.bar is not None:
                plain(Text.from_markup(text).plain)

    def warn(self, text: str) -> None:
        """Print a warning even when quiet: a problem with the run is not progress."""
        self.console.print(f"[yellow]warning: {text}", soft_wrap=True)
        if self.bar is not None:
            plain(f"warning: {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class TaskProgress:
    """Progress of a command's long loop (feature extraction, probe seeds, head epochs) on
    stderr: a bar on a terminal, otherwise a plain line at every tenth, so ``--json`` keeps
    stdout clean and a cluster log shows the command is alive. Silent for tiny loops."""

    def __init__(self, description: str, total: int, min_total: int = 5) -> None:
        self.description, self.total, self.done = description, total, 0
        self.shown = total >= min_total
        self.bar: Progress | None = None
        self.started = time.perf_counter()
        self.next_line = max(1, total // 10)
        if self.shown and sys.stderr.isatty():
            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task(description, total=total)
            self.bar.start()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.shown and (self.done >= self.next_line or self.done == self.total):
            elapsed = time.perf_counter() - self.started
            print(
                f"[{self.description}] {self.done}/{self.total}  {elapsed:.0f}s",
                file=sys.stderr,
                flush=True,
            )
            self.next_line = self.done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> "TaskProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
