"""Every command's stderr, also kept in the run folder: ``RUN/logs/<command>-<UTC time>.log``.

A run's warnings, skipped files and progress are worth keeping after the terminal is gone. While
a command runs, ``sys.stderr`` (and the logging handlers that write to it) go through a tee
that copies each write to the log file with terminal colour codes removed. A live progress
bar's repaints (cursor moves, erased lines) are not copied; the bar's owner writes one plain
line per logged step with :func:`plain` instead, so the file reads like a cluster log.

Only rank 0 of a multi-process launch keeps a log; a folder that cannot be written leaves the
command without one (it never fails a command).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

COLOUR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
REPAINT = re.compile(r"\x1b\[\d*[AF]|\x1b\[2K|\x1b\[\?25[lh]")  # cursor up, erase line, cursor

_current: "_Tee | None" = None


class _Tee:
    """A text stream that writes to ``stream`` and, cleaned, to ``log``."""

    def __init__(self, stream: IO[str], log: IO[str]) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        if not REPAINT.search(text):
            try:
                self.log.write(COLOUR.sub("", text).replace("\r", ""))
                self.log.flush()
            except (OSError, ValueError):  # a full disk or a closed log: the terminal still works
                pass
        return written

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def plain(line: str) -> None:
    """Write ``line`` to the open command log only (what a live display shows differently)."""
    if _current is not None:
        try:
            _current.log.write(line.rstrip("\n") + "\n")
            _current.log.flush()
        except (OSError, ValueError):
            pass


def log_path(run_dir: Path, command: str) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return run_dir / "logs" / f"{command}-{stamp}.log"


@contextmanager
def command_log(run_dir: Path | None, command: str) -> Iterator[Path | None]:
    """Tee stderr into ``run_dir/logs/`` for the block; yield the log's path (None if none)."""
    global _current
    if run_dir is None or int(os.environ.get("RANK", "0") or 0) != 0 or _current is not None:
        yield None
        return
    path = log_path(Path(run_dir), command)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a", encoding="utf-8")
    except OSError:
        yield None
        return
    original = sys.stderr
    tee = _Tee(original, handle)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is original
    ]
    sys.stderr, _current = tee, tee
    for handler in handlers:
        handler.setStream(tee)
    try:
        yield path
    except Exception as err:  # the command's error line is printed after the tee is gone
        plain(f"error: {err}")
        raise
    finally:
        for handler in handlers:
            handler.setStream(original)
        sys.stderr, _current = original, None
        handle.close()
