"""Label files given at probe time: a CSV of ``record,label`` (ECG) or ``file,label`` rows.

``jepactl probe RUN --data D --labels FILE.csv`` labels data that has no labels of its own (or
relabels data that has). A header row is optional (a first row whose first cell is ``record``,
``file``, ``path`` or ``name``); blank lines are skipped. Keys name items relative to the data
folder (``a/b.png``; records without their suffix), or by their bare name when that is unique.
The classes are every label in the file, sorted, so a file that covers both ``--data`` and
``--test`` gives both the same classes. Items the file does not list are left out, with one
notice line giving the count; a file that names nothing in the data is a one-line error.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jepactl.errors import DataError

log = logging.getLogger("jepactl")

HEADER_KEYS = ("record", "file", "path", "name")
_noticed: set[tuple[str, ...]] = set()  # notices already given (a split is read several times)


@dataclass
class LabelFile:
    """The rows of a label CSV: ``key -> label`` and the line each key came from."""

    path: Path
    kind: str  # "record" or "file": what the keys name
    labels: dict[str, str]
    lines: dict[str, int]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.values()))

    def describe(self) -> str:
        return f"'{self.path}' ({self.kind},label)"


def normalise_key(key: str) -> str:
    """Return a CSV key as a relative POSIX path: backslashes to slashes, no leading ``./``."""
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def resolve_label_path(path: str | Path, base: Path | None = None) -> Path:
    """Return the label file: ``path`` as given, else relative to ``base`` (the data folder)."""
    given = Path(path).expanduser()
    if (
        not given.is_absolute()
        and not given.is_file()
        and base is not None
        and (base / given).is_file()
    ):
        return base / given
    if not given.is_file():
        raise DataError(
            f"label file '{path}' does not exist"
            if not given.exists()
            else f"label file '{path}' is not a file"
        )
    return given


def read_label_file(path: str | Path, kind: str, base: Path | None = None) -> LabelFile:
    """Return the ``kind,label`` rows of the CSV at ``path``; DataError naming file and line.

    A row needs exactly two non-empty cells (trailing empty cells are ignored); a key listed
    twice with different labels is an error.
    """
    path = resolve_label_path(path, base)
    expected = f"expected '{kind},label'"
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            first = True
            for line, row in enumerate(csv.reader(handle), start=1):
                cells = [c.strip() for c in row]
                while cells and not cells[-1]:
                    cells.pop()
                if not cells:
                    continue  # blank line
                if first and cells[0].lower() in HEADER_KEYS:
                    first = False
                    continue  # a header row: record,label / file,label
                first = False
                if len(cells) != 2 or not cells[0] or not cells[1]:
                    shown = ",".join(row)
                    shown = shown if len(shown) <= 60 else shown[:57] + "..."
                    raise DataError(f"label file '{path}' line {line}: {expected}, got '{shown}'")
                key = normalise_key(cells[0])
                if key in labels and labels[key] != cells[1]:
                    raise DataError(
                        f"label file '{path}' line {line}: '{cells[0]}' is labelled "
                        f"'{cells[1]}' but line {lines[key]} says '{labels[key]}'"
                    )
                labels.setdefault(key, cells[1])
                lines.setdefault(key, line)
    except UnicodeDecodeError:
        raise DataError(f"label file '{path}' is not a UTF-8 text CSV") from None
    except csv.Error as err:
        raise DataError(f"label file '{path}': {err}") from None
    if not labels:
        raise DataError(f"label file '{path}' is empty: {expected} rows")
    return LabelFile(path, kind, labels, lines)


def label_file_digest(path: str | Path | None) -> str:
    """Return a short hash of the label file's bytes (for feature-cache keys), '' for None."""
    if path is None:
        return ""
    try:
        return hashlib.sha1(Path(path).expanduser().read_bytes()).hexdigest()[:12]
    except OSError:
        return str(path)  # a missing file fails with its own message where it is read


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def match_files(
    table: LabelFile, files: list[Path], roots: list[Path], where: str
) -> tuple[list[int], np.ndarray, list[str]]:
    """Return (kept indices into ``files``, their class indices, classes) from ``table``.

    A file matches a key that is its path relative to one of ``roots`` (the data folder, then
    the split folder read), its absolute path, or its bare name when no other file has it.
    Files the table does not list are left out with one notice; none listed is a DataError.
    """
    bare = Counter(p.name for p in files)
    classes = table.classes
    column = {c: i for i, c in enumerate(classes)}
    keep, labels = [], []
    for i, path in enumerate(files):
        names = [_relative(path, root) for root in roots]
        names.append(path.resolve().as_posix())
        if bare[path.name] == 1:
            names.append(path.name)
        label = next((table.labels[n] for n in names if n and n in table.labels), None)
        if label is not None:
            keep.append(i)
            labels.append(column[label])
    if not keep:
        example = next(iter(table.labels))
        raise DataError(
            f"no file under '{where}' is listed in label file '{table.path}' "
            f"(its first key is '{example}'; keys are paths relative to the data "
            "folder, or bare file names)"
        )
    notice_left_out(len(files) - len(keep), len(files), "files", where, table.path)
    return keep, np.asarray(labels, dtype=np.int64), classes


def notice_left_out(missing: int, total: int, what: str, where: str, label_path: Path) -> None:
    """Log once per (data, label file, count): ``missing`` of ``total`` items have no label."""
    key = (str(where), str(label_path), str(missing), str(total))
    if missing <= 0 or key in _noticed:
        return
    _noticed.add(key)
    log.warning(
        "%d of %d %s under %s are not in label file %s: left out of the probe",
        missing,
        total,
        what,
        where,
        label_path,
    )
