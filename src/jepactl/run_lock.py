"""One run per run folder: ``RUN/.lock`` names the process that is writing it.

Two ``jepactl pretrain`` processes in the same ``--out`` would interleave metrics and overwrite
each other's checkpoints, and nothing would say so. The lock file is created atomically
(``O_CREAT | O_EXCL``) and holds JSON ``{host, pid, started, argv}``, so a refusal can name the
holder. A lock whose process has died (killed, the machine rebooted) would block the folder for
good, so on the same host a holder that no longer exists is taken over with a warning; a holder
on another host cannot be checked from here, and the user is told how to remove its lock.
Only the main process of a distributed run takes the lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from jepactl.errors import UserError

log = logging.getLogger("jepactl")

LOCK_NAME = ".lock"
# A holder writes its JSON right after creating the file; a reader that finds it empty waits
# this long for the content before calling the lock unreadable.
_UNREADABLE_WAIT_S = 1.0


def pid_is_alive(pid: int) -> bool:
    """Return whether process ``pid`` exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


class RunLock:
    """Hold ``run_dir/.lock`` for the duration of a ``with`` block (or ``acquire``/``release``).

    The run folder is created if needed; if the lock created it and it is still empty on
    release (the run failed before writing anything), it is removed again.
    """

    def __init__(self, run_dir: Path, argv: list[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.argv = list(sys.argv if argv is None else argv)
        self._content: bytes | None = None
        self._created_dir = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        self._created_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        content = (
            json.dumps(
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "argv": self.argv,
                }
            ).encode()
            + b"\n"
        )
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_stale_lock()  # returns only if the old lock is gone: try again
                continue
            try:
                os.write(fd, content)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(self.path)
                raise
            os.close(fd)
            self._content = content
            return

    def release(self) -> None:
        if self._content is None:
            return
        try:  # remove only our own lock: the user may have removed it and started another run
            if self.path.read_bytes() == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._content = None
        if self._created_dir:
            try:
                self.run_dir.rmdir()  # fails (and is kept) unless the run wrote nothing
            except OSError:
                pass

    def _read_holder(self) -> tuple[bytes, dict[str, Any]] | None:
        """Return the current lock's (raw bytes, JSON), or None if it has just gone."""
        deadline = time.monotonic() + _UNREADABLE_WAIT_S
        while True:
            try:
                raw = self.path.read_bytes()
            except FileNotFoundError:
                return None
            try:
                holder = json.loads(raw)
                if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                    return raw, holder
            except ValueError:
                pass
            if time.monotonic() > deadline:
                raise UserError(
                    f"run folder '{self.run_dir}' has a lock file it cannot read "
                    f"('{self.path}'); if no run is using the folder, remove it: "
                    f"rm {self.path}"
                )
            time.sleep(0.05)

    def _remove_stale_lock(self) -> None:
        """Raise UserError if the lock's holder may be running; otherwise remove the lock."""
        found = self._read_holder()
        if found is None:
            return
        raw, holder = found
        pid, host = holder["pid"], holder.get("host", "?")
        since = holder.get("started", "?")
        here = socket.gethostname()
        if host != here:
            raise UserError(
                f"run folder '{self.run_dir}' is locked by pid {pid} on host {host} "
                f"since {since}, which cannot be checked from host {here}; wait for "
                f"it or choose another --out (if that run is dead: rm {self.path})"
            )
        if pid_is_alive(pid):
            raise UserError(
                f"run folder '{self.run_dir}' is in use by pid {pid} on host {host} "
                f"since {since}; wait for it or choose another --out"
            )
        # Move the stale lock aside rather than unlinking it: if another process took it over
        # between our read and now, what we moved is that process's fresh lock, and it goes back.
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_bytes() != raw:
            try:
                os.link(aside, self.path)  # atomic; fails if yet another lock appeared
            except FileExistsError:
                pass
            aside.unlink()
            return
        aside.unlink()
        log.warning(
            "taking over the stale lock of run folder '%s': pid %s on host %s (since %s) "
            "is no longer running",
            self.run_dir,
            pid,
            host,
            since,
        )
