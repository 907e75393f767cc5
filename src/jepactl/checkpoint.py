"""Checkpoints as safetensors files: no pickle, atomic writes, and a fallback when one is damaged.

Loading a pickle can run any code the file holds, and run folders travel between machines and
people; so a checkpoint is one ``checkpoints/step-00000123.safetensors``: every tensor (and
numpy array, as bytes) in the payload under its path in the state, and the rest of the state
(dict and list structure, tuples, int keys, numbers, strings) as a JSON skeleton in the
file's metadata. ``pack``/``unpack`` (state_file.py) convert any such state, so the trainer
(model, target, optimizer, RNG of every process) and the deep-linear analysis share one format.

A save writes a temporary file in the same folder, fsyncs it and renames it over the final
name (``os.replace`` is atomic on POSIX), then deletes all but the newest ``keep``: a run killed
mid-write, or a full disk, leaves the previous checkpoint intact. Loading takes the newest
readable file and warns about each unreadable one it skips. The old ``last.pt`` (torch.save)
is read only after ``allow_unsafe_pickle()`` (``jepactl --unsafe-pickle``).

``best.safetensors`` beside them (``save_best_checkpoint``) is the checkpoint of the step where
the online probe scored best, with ``selected_by`` {metric, value} in its state. It is never
pruned and never resumed from: ``find_checkpoints`` lists the ``step-N`` files alone.
``load_checkpoint_choice`` reads what ``--checkpoint`` names: last, best or a step number.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from jepactl.errors import UserError
from jepactl.state_file import pack, unpack, write_safetensors

log = logging.getLogger("jepactl")

LEGACY_NAME = "last.pt"
BEST_NAME = "best.safetensors"
_STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")
_FORMAT = "1"  # metadata "jepactl_format": bump when the skeleton's encoding changes
_UNSAFE_PICKLE = False


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def allow_unsafe_pickle(allowed: bool = True) -> None:
    """Let ``load_latest_checkpoint`` unpickle old ``last.pt`` files (``--unsafe-pickle``)."""
    global _UNSAFE_PICKLE
    _UNSAFE_PICKLE = allowed


_WRITE_FAILURES = {  # errno -> what the user reads before "while writing '<path>'"
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


def find_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Return the folder's checkpoints, newest step first; a legacy ``last.pt`` comes last."""
    if not checkpoint_dir.is_dir():
        return []
    steps = [
        (int(m.group(1)), path)
        for path in checkpoint_dir.iterdir()
        if (m := _STEP_FILE.match(path.name))
    ]
    found = [path for _, path in sorted(steps, reverse=True)]
    legacy = checkpoint_dir / LEGACY_NAME
    return found + [legacy] if legacy.is_file() else found


def remove_interrupted_saves(checkpoint_dir: Path) -> None:
    """Delete temporary files a killed save left behind (``.<name>.*.tmp``)."""
    if checkpoint_dir.is_dir():
        for path in checkpoint_dir.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def save_checkpoint(checkpoint_dir: Path, step: int, state: Any, keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoint_dir/step-<step>.safetensors`` atomically; return its path.

    Afterwards only the newest ``keep`` checkpoints up to ``step`` remain. A write that fails
    because the disk is full (or read-only, or over quota) raises UserError and leaves the
    previous checkpoint as it was.
    """
    if keep < 1:
        raise UserError(f"recipe key 'checkpoint.keep' must be at least 1, got {keep}")
    path = checkpoint_dir / checkpoint_name(step)

    def intact() -> str:
        previous = [p for p in find_checkpoints(checkpoint_dir) if p != path]
        return (
            f"the previous checkpoint '{previous[0]}' is intact"
            if previous
            else "no earlier checkpoint exists"
        )

    _write_state(path, state, {}, intact)
    older = [
        p
        for p in find_checkpoints(checkpoint_dir)
        if p.name != LEGACY_NAME and p != path and _step_of(p) < step
    ]
    for stale in older[keep - 1 :]:
        stale.unlink(missing_ok=True)
    return path


def save_best_checkpoint(
    checkpoint_dir: Path, step: int, state: Any, metric: str, value: float
) -> Path:
    """Write ``state`` (a checkpoint state with "step" and "model") as
    ``checkpoint_dir/best.safetensors`` atomically, replacing the previous best; return its path.

    ``metric`` and ``value`` (what made this step the best) are kept in the state as
    ``selected_by`` {"metric", "value"} and in the file's metadata. The step-N files and
    their pruning are untouched, and resuming never reads this file.
    """
    if not isinstance(state, dict):
        raise TypeError(f"a best checkpoint's state is a dict, got {type(state).__name__}")
    if "step" in state and int(state["step"]) != step:
        raise ValueError(f"best checkpoint at step {step} got the state of step {state['step']}")
    selected_by = {"metric": str(metric), "value": float(value)}
    path = checkpoint_dir / BEST_NAME

    def intact() -> str:
        return (
            f"the previous best checkpoint '{path}' is intact"
            if path.is_file()
            else "the step checkpoints are intact"
        )

    state = {**state, "step": step, "selected_by": selected_by}
    _write_state(path, state, {"selected_by": json.dumps(selected_by)}, intact)
    return path


def _write_state(path: Path, state: Any, extra_metadata: dict[str, str], intact) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsynced and
    renamed over ``path``, then the folder fsynced. A full disk (read-only, over quota, ...)
    is a UserError ending in ``intact()``, what is left as it was."""
    checkpoint_dir = path.parent
    tensors, skeleton = pack(state)
    metadata = {**extra_metadata, "jepactl": json.dumps(skeleton), "jepactl_format": _FORMAT}
    tmp = None
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        remove_interrupted_saves(checkpoint_dir)
        fd, tmp = tempfile.mkstemp(dir=checkpoint_dir, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            write_safetensors(handle, tensors, metadata)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; run folders are shared on clusters
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(checkpoint_dir)  # the rename itself survives a power cut
    except OSError as err:
        if err.errno not in _WRITE_FAILURES:
            raise
        raise UserError(
            f"{_WRITE_FAILURES[err.errno]} while writing '{path}': {intact()}"
        ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _step_of(path: Path) -> int:
    return int(_STEP_FILE.match(path.name).group(1))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


class _Unreadable(Exception):
    """A checkpoint file that is truncated or corrupt: the loader falls back past it."""


def read_checkpoint(path: Path) -> Any:
    """Return the state saved in one checkpoint file (raises _Unreadable when damaged)."""
    if path.name == LEGACY_NAME:
        return _read_legacy(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        if "jepactl" not in metadata:
            raise _Unreadable("not a jepactl checkpoint (no 'jepactl' metadata)")
        if metadata.get("jepactl_format") != _FORMAT:
            raise _Unreadable(
                f"checkpoint format {metadata.get('jepactl_format')!r} is not "
                f"this jepactl's ({_FORMAT})"
            )
        return unpack(tensors, json.loads(metadata["jepactl"]))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise _Unreadable(str(err) or type(err).__name__) from None


def _read_legacy(path: Path) -> Any:
    if not _UNSAFE_PICKLE:
        raise UserError(
            f"checkpoint '{path}' is in the old pickle format, which can run code "
            "when loaded; if you trust this run folder, rerun with "
            "`jepactl --unsafe-pickle ...`"
        )
    log.warning(
        "unpickling the old-format checkpoint '%s' (--unsafe-pickle: this runs any "
        "code the file holds)",
        path,
    )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as err:
        raise _Unreadable(str(err) or type(err).__name__) from None


def load_latest_checkpoint(checkpoint_dir: Path) -> tuple[Any, Path]:
    """Return (state, path) of the newest readable checkpoint in ``checkpoint_dir``.

    A truncated or corrupt file (a disk that filled up, a copy cut short) is skipped with a
    warning naming it; UserError when none is readable or the folder holds none.
    """
    paths = find_checkpoints(checkpoint_dir)
    if not paths:
        raise UserError(f"no checkpoint in '{checkpoint_dir}'")
    for i, path in enumerate(paths):
        try:
            return read_checkpoint(path), path
        except _Unreadable as err:
            then = (
                f"falling back to '{paths[i + 1].name}'"
                if i + 1 < len(paths)
                else "no older checkpoint left"
            )
            log.warning("checkpoint '%s' is unreadable (%s); %s", path, err, then)
    raise UserError(
        f"no readable checkpoint in '{checkpoint_dir}' "
        f"({len(paths)} damaged: {', '.join(p.name for p in paths)})"
    )


_CHOICE_FORMS = "last, best or a step number (e.g. --checkpoint 1500)"


def checkpoint_choice(choice: str) -> str | int:
    """Return ``"last"``, ``"best"`` or the step number that ``--checkpoint`` text names."""
    text = str(choice).strip()
    if text in ("last", "best"):
        return text
    if text.isascii() and text.isdigit():
        return int(text)
    raise UserError(f"--checkpoint must be {_CHOICE_FORMS}, got '{choice}'")


def load_checkpoint_choice(checkpoint_dir: Path, choice: str) -> tuple[Any, Path]:
    """Return (state, path) of the checkpoint ``choice`` names (``--checkpoint``).

    "last": the newest readable step checkpoint (``load_latest_checkpoint``, with its
    fallback past damaged files); "best": ``best.safetensors``, kept by the online probe; a
    step number as text ("1500"): ``step-00001500.safetensors``. Only "last" falls back:
    a named checkpoint that is missing or damaged is a UserError.
    """
    which = checkpoint_choice(choice)
    if which == "last":
        return load_latest_checkpoint(checkpoint_dir)
    if which == "best":
        path = checkpoint_dir / BEST_NAME
        if not path.is_file():
            raise UserError(
                "run has no best checkpoint (runs of jepactl 0.2.0 and earlier keep none); "
                "use --checkpoint last or a step number"
            )
    else:
        path = checkpoint_dir / checkpoint_name(which)
        if not path.is_file():
            steps = [_step_of(p) for p in find_checkpoints(checkpoint_dir) if p.name != LEGACY_NAME]
            kept = ", ".join(str(s) for s in sorted(steps)) if steps else "none"
            raise UserError(
                f"run has no checkpoint at step {which} in '{checkpoint_dir}': the kept steps are "
                f"{kept} (checkpoint.keep keeps the newest); use one of them, last or best"
            )
    try:
        return read_checkpoint(path), path
    except _Unreadable as err:
        raise UserError(f"checkpoint '{path}' is unreadable ({err})") from None


def load_model_state(module: nn.Module, state: dict[str, Any], source_path: Path) -> None:
    """Load ``state`` into ``module``; UserError naming the first key that does not fit.

    The usual cause is a recipe whose model changed after the checkpoint was written
    (``model.depth=12`` on ``--resume``, or an edited recipe.yaml).
    """
    expected = module.state_dict()
    prefix = f"checkpoint '{source_path}' does not match the recipe's model:"
    for key, value in expected.items():
        if key not in state:
            raise UserError(
                f"{prefix} the model has '{key}' {_shape(value)} but the checkpoint does not"
            )
        saved = state[key]
        if torch.is_tensor(value) and torch.is_tensor(saved) and saved.shape != value.shape:
            raise UserError(
                f"{prefix} '{key}' has shape {_shape(saved)} in the checkpoint "
                f"but {_shape(value)} in the model"
            )
    for key, saved in state.items():
        if key not in expected:
            raise UserError(
                f"{prefix} the checkpoint has '{key}' {_shape(saved)} but the model does not"
            )
    module.load_state_dict(state)


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if torch.is_tensor(value) else ""


# --------------------------------------------------------------------------------------------
# other files: caches and text
# --------------------------------------------------------------------------------------------


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save ``obj`` atomically: for feature caches, read back with weights_only=True."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; run folders are shared on clusters
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
