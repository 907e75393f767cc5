"""ECG labels from whichever the data has: beat annotations, header codes, PTB-XL, a plain CSV.

* ``beats``: WFDB ``.atr`` annotations; each beat symbol maps to its AAMI class (N, S, V, F, Q)
  as in de Chazal et al. 2004 / ANSI/AAMI EC57; non-beat symbols (rhythm changes, noise, ``+``)
  are dropped. One sample per beat, located at its annotated R peak.
* ``dx``: SNOMED-CT codes on the ``# Dx:`` header line (PhysioNet/CinC 2020-2021), multi-label.
* ``ptbxl``: ``ptbxl_database.csv`` (``scp_codes``, ``strat_fold``); task ``all`` uses every SCP
  statement, ``superdiagnostic`` the five diagnostic superclasses via ``scp_statements.csv``.
* ``csv``: a file of ``record,label`` rows (single-label, one class name per record).
"""

from __future__ import annotations

import ast
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jepactl.data.label_files import notice_left_out, read_label_file
from jepactl.domains.ecg.wfdb import ECGRecord, ECGSource
from jepactl.errors import DataError

AAMI_CLASSES = ["N", "S", "V", "F", "Q"]
AAMI_OF_SYMBOL = {
    **dict.fromkeys(["N", "L", "R", "e", "j"], "N"),
    **dict.fromkeys(["A", "a", "J", "S"], "S"),
    **dict.fromkeys(["V", "E"], "V"),
    "F": "F",
    **dict.fromkeys(["/", "f", "Q"], "Q"),
}
PTBXL_SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]


@dataclass
class Beat:
    record: int  # index into ECGSource.records
    sample: int  # R-peak position at the record's native rate
    label: int  # index into AAMI_CLASSES


@dataclass
class RecordLabels:
    """Per-record targets: ``targets`` is (R, K) multi-hot, or (R,) class indices when single."""

    records: list[int]  # indices into ECGSource.records
    targets: np.ndarray
    classes: list[str]
    multilabel: bool
    folds: list[int] | None = None  # PTB-XL strat_fold per record


def detect_label_kind(source: ECGSource, csv_path: str | None) -> str | None:
    """Return ``ptbxl``, ``csv``, ``beats``, ``dx`` or None, from what the data holds."""
    if (source.root / "ptbxl_database.csv").is_file():
        return "ptbxl"
    if csv_path:
        return "csv"
    if any(r.kind == "wfdb" and r.path.with_suffix(".atr").is_file() for r in source.records):
        return "beats"
    if any(dx_codes(r) for r in source.records):
        return "dx"
    return None


def read_beats(source: ECGSource, record_index: int, extension: str = "atr") -> list[Beat]:
    """Return the AAMI-classified beats of one record (empty when it has no annotation file)."""
    import wfdb

    record = source.records[record_index]
    if record.kind != "wfdb" or not record.path.with_suffix("." + extension).is_file():
        return []
    try:
        ann = wfdb.rdann(str(record.path), extension)
    except Exception as err:  # wfdb raises bare ValueError/IndexError on corrupt files
        raise DataError(
            f"cannot read beat annotations '{record.path}.{extension}': {err}"
        ) from None
    return [
        Beat(record_index, int(s), AAMI_CLASSES.index(AAMI_OF_SYMBOL[sym]))
        for s, sym in zip(ann.sample, ann.symbol)
        if sym in AAMI_OF_SYMBOL
    ]


def dx_codes(record: ECGRecord) -> list[str]:
    """Return the SNOMED-CT codes of a ``# Dx: a,b,c`` header comment (empty when absent)."""
    for line in record.comments:
        key, _, value = line.partition(":")
        if key.strip().lower() == "dx":
            return [code.strip() for code in value.split(",") if code.strip()]
    return []


def dx_labels(source: ECGSource, classes: list[str] | None = None) -> RecordLabels:
    """Return multi-hot header-code targets; ``classes`` defaults to every code seen, sorted."""
    codes = [dx_codes(r) for r in source.records]
    keep = [i for i, c in enumerate(codes) if c]
    if not keep:
        raise DataError(f"no record under '{source.root}' has a '# Dx:' header line")
    classes = classes or sorted({c for i in keep for c in codes[i]})
    column = {c: j for j, c in enumerate(classes)}
    targets = np.zeros((len(keep), len(classes)), dtype=np.float32)
    for row, i in enumerate(keep):
        for code in codes[i]:
            if code in column:
                targets[row, column[code]] = 1.0
    return RecordLabels(keep, targets, classes, multilabel=True)


def _by_relative_name(source: ECGSource) -> dict[str, int]:
    names = {}
    for i, record in enumerate(source.records):
        names[record.name] = i
        names.setdefault(Path(record.name).name, i)  # bare record names in CSVs
    return names


def ptbxl_labels(source: ECGSource, task: str, sample_rate: int) -> RecordLabels:
    """Return PTB-XL targets (``all`` statements or ``superdiagnostic``) with strat_fold."""
    table = source.root / "ptbxl_database.csv"
    column = "filename_lr" if sample_rate <= 100 else "filename_hr"
    names = _by_relative_name(source)
    superclass = {}
    if task == "superdiagnostic":
        statements = source.root / "scp_statements.csv"
        if not statements.is_file():
            raise DataError(f"'{statements}' is missing: PTB-XL superclasses need it")
        with statements.open(newline="") as handle:
            for row in csv.DictReader(handle):
                code = row.get("") or next(iter(row.values()))
                if row.get("diagnostic") in ("1", "1.0") and row.get("diagnostic_class"):
                    superclass[code] = row["diagnostic_class"]
    rows: list[tuple[int, list[str], int]] = []
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"scp_codes", "strat_fold", column} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"'{table}' has no column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            index = names.get(row[column], names.get(Path(row[column]).name))
            if index is None:
                continue
            try:
                codes = ast.literal_eval(row["scp_codes"])
                fold = int(float(row["strat_fold"]))
            except (ValueError, SyntaxError):
                raise DataError(f"'{table}' line {line}: bad scp_codes or strat_fold") from None
            if task == "superdiagnostic":
                codes = sorted({superclass[c] for c in codes if c in superclass})
            rows.append((index, list(codes), fold))
    if not rows:
        raise DataError(f"no record listed in '{table}' ({column}) was found under '{source.root}'")
    classes = (
        PTBXL_SUPERCLASSES
        if task == "superdiagnostic"
        else sorted({c for _, codes, _ in rows for c in codes})
    )
    targets = np.zeros((len(rows), len(classes)), dtype=np.float32)
    for r, (_, codes, _) in enumerate(rows):
        for code in codes:
            targets[r, classes.index(code)] = 1.0
    return RecordLabels([r[0] for r in rows], targets, classes, True, [r[2] for r in rows])


def csv_labels(source: ECGSource, csv_path: str) -> RecordLabels:
    """Return single-label targets from a ``record,label`` CSV (a header row is optional).

    The file is read by ``data/label_files.py`` (found as given, else under the data folder);
    records are matched by their name relative to the data folder, or their bare name. The
    classes are every label in the file, so one file covering ``--data`` and ``--test`` gives
    both the same classes; records the file does not list are left out with one notice.
    """
    table = read_label_file(csv_path, "record", base=source.root)
    names = _by_relative_name(source)
    pairs: dict[int, str] = {}
    for name, label in table.labels.items():
        index = names.get(name, names.get(str(Path(name).with_suffix(""))))
        if index is not None:
            pairs.setdefault(index, label)
    if not pairs:
        raise DataError(
            f"no record named in '{table.path}' was found under '{source.root}' "
            f"(its first record is '{next(iter(table.labels))}'; records are named "
            "relative to the data folder, without suffix)"
        )
    notice_left_out(
        len(source.records) - len(pairs),
        len(source.records),
        "records",
        str(source.root),
        table.path,
    )
    classes = table.classes
    records = list(pairs)  # in the file's order
    targets = np.array([classes.index(pairs[i]) for i in records], dtype=np.int64)
    return RecordLabels(records, targets, classes, multilabel=False)
