"""Output paths: check they can be written before the work starts, then write all or nothing.

A pretraining run, a fine-tune or an embedding pass can take hours; finding out at the end that
``--out`` is a file, sits under a file or is on a read-only disk wastes them.
``check_writable_folder`` / ``check_writable_file`` probe the nearest existing folder with a
temporary file (creating nothing that stays) and raise a one-line UserError.

``StagedFiles`` writes each output to a temporary file next to it and renames them into place
only once every one is written, so a full disk mid-export leaves the previous export or
embedding file intact. ``describe_os_error`` is the one line the CLI prints for an OSError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from jepactl.checkpoint import _FILE_MODE
from jepactl.errors import UserError


def describe_os_error(err: OSError, path: Any = None, writing: bool = False) -> str:
    """Return one line naming the path and the problem, e.g. "cannot write 'x': Read-only
    file system". ``path`` (the output being written, when the caller knows it) names the file
    rather than the error's own filename (a temporary file, or none for a failed ``write()``)."""
    if path is None:
        path = err.filename
    reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err) or repr(err))
    where = f" '{path}'" if path is not None else ""
    if err.errno == errno.ENOSPC:
        return f"disk full while writing{where} ({reason})"
    if err.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing{where} ({reason})"
    if err.errno == errno.EFBIG:  # also what a file-size limit (ulimit -f) gives
        return f"file size limit reached while writing{where} ({reason})"
    if err.filename2 is not None and path == err.filename:
        return f"'{err.filename}' -> '{err.filename2}': {reason}"
    if writing or err.errno == errno.EROFS:
        return f"cannot write{where}: {reason}"
    return f"'{path}': {reason}" if path is not None else reason


def as_os_error(exc: BaseException) -> OSError | None:
    """Return ``exc`` as an OSError: itself, or one rebuilt from a Rust I/O error's text
    (safetensors raises ``SafetensorError('... I/O error: File too large (os error 27)')``)."""
    if isinstance(exc, OSError):
        return exc
    match = re.search(r"\(os error (\d+)\)", str(exc))
    if match:
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    return None


@contextlib.contextmanager
def write_errors_name(path: Path) -> Iterator[None]:
    """Turn an OSError (or a library's I/O error) raised while writing ``path`` into a
    UserError naming it."""
    try:
        yield
    except Exception as exc:
        os_error = as_os_error(exc)
        if os_error is None:
            raise
        raise UserError(describe_os_error(os_error, path, writing=True)) from exc


def check_writable_folder(folder: Path, option: str = "--out") -> None:
    """Raise UserError unless ``folder`` exists as a writable folder or could be created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} '{folder}' is a file, not a folder")
    _check_creatable(folder, folder, option)


def check_writable_file(path: Path, option: str = "--out") -> None:
    """Raise UserError unless file ``path`` could be written (its folder created if needed)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} '{path}' is a folder; give a file name")
    _check_creatable(path.parent, path, option)


def _check_creatable(folder: Path, target: Path, option: str) -> None:
    existing = folder
    try:
        while not existing.exists():  # Path('.') and '/' exist, so this stops
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(
                f"{option} '{target}' cannot be created: '{existing}' is a file, not a folder"
            )
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".jepactl-write-test-")
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise UserError(f"{option}: {describe_os_error(err, target, writing=True)}") from None


class StagedFiles:
    """Write outputs to temporary files in their folders; rename all into place on success.

    ``with StagedFiles() as stage: save(stage.path(out / "a"))`` -- on an exception every
    temporary file is removed and the previous outputs are untouched; an I/O error becomes a
    UserError naming the file being written. Files get the mode of every other output
    (umask-derived, not mkstemp's 0600: run folders are shared on clusters).
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._created: list[Path] = []  # folders made for the outputs, removed on failure

    def path(self, final: Path) -> Path:
        """Return the temporary path to write ``final``'s content to."""
        final = Path(final)
        with write_errors_name(final):
            missing = final.parent
            while not missing.exists():
                self._created.append(missing)
                missing = missing.parent
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        os.close(fd)
        self._staged.append((Path(tmp), final))
        return Path(tmp)

    def __enter__(self) -> "StagedFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            try:
                self._commit()
            except BaseException:
                self._discard()
                raise
            return
        self._discard()
        os_error = as_os_error(exc)
        if os_error is not None and not isinstance(exc, UserError):
            writing = self._staged[-1][1] if self._staged else None  # the file being written
            raise UserError(describe_os_error(os_error, writing, writing=True)) from exc
        # returning None re-raises exc unchanged

    def _commit(self) -> None:
        for tmp, final in self._staged:  # everything is written: make it durable, then visible
            with write_errors_name(final), open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        for tmp, final in self._staged:
            with write_errors_name(final):
                os.chmod(tmp, _FILE_MODE)
                os.replace(tmp, final)

    def _discard(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        for folder in sorted(set(self._created), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only if empty: never what another writer put there
            except OSError:
                pass


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` with errors that keep their errno.

    numpy's own writer reports a failed write as "N requested and M written", with no errno, so
    a full disk could not be told from anything else; writing the data through Python keeps it.
    """
    array = np.ascontiguousarray(array)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, np.lib.format.header_data_from_array_1_0(array)
        )
        handle.write(memoryview(array).cast("B"))
