"""Embedding files as ``jepactl embed`` writes them and ``jepactl probe --features`` reads them.

Three forms, chosen by ``--out``:

- ``FILE.parquet``: one parquet file, columns ``index`` (the sample's position in the input),
  ``id`` (its file path or record name, else the index as text), ``label``, ``class`` (the
  label's name) and ``embedding`` (a fixed-size float32 list per row).
- ``FILE.npy``: an N x D float32 array, and next to it ``FILE.index.csv`` with the same columns
  but the embedding.
- a folder (a name without a suffix, or a path ending in ``/``: ``embeddings``,
  ``x.parquet/``): a parquet data set, ``part-<rank>-of-<N>.parquet`` (5-digit numbers, so
  file-name order is input order) plus ``_manifest.json`` written last.
  ``pandas.read_parquet(folder)`` or ``pyarrow.dataset.dataset(folder)`` reads it (they skip
  names starting with ``_`` or ``.``).

Rows are written a row group at a time (``ROW_GROUP_ROWS``), so memory holds one row group
whatever the data set's size. The parquet schema metadata (key ``jepactl``) records the
encoder, data, split and the data set's class names, which a probe on the file uses.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jepactl.errors import DataError, UserError
from jepactl.output_paths import write_errors_name

ROW_GROUP_ROWS = 8192  # rows held in memory before a row group is written
MANIFEST = "_manifest.json"
PART_NAME = re.compile(r"^part-(\d+)-of-(\d+)\.parquet$")
METADATA_KEY = b"jepactl"


def output_form(out: str | Path) -> str:
    """Return ``"npy"``, ``"parquet"`` (one file) or ``"folder"`` (a parquet data set) for
    ``--out``: a folder when the path ends in ``/`` or has no suffix."""
    text = str(out)
    if text.endswith(("/", os.sep)):
        return "folder"
    suffix = Path(text).suffix
    if suffix in (".npy", ".parquet"):
        return suffix[1:]
    if suffix == "":
        return "folder"
    raise UserError(
        f"--out must be a .npy or .parquet file, or a folder (a name without a suffix, or "
        f"ending in /) for a parquet data set; got '{out}'"
    )


def part_name(rank: int, world: int) -> str:
    return f"part-{rank:05d}-of-{world:05d}.parquet"


def index_csv_path(npy: Path) -> Path:
    return npy.with_name(npy.name[: -len(".npy")] + ".index.csv")


def rows_table(
    start: int,
    feats: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
    classes: list[str],
):
    """Return a pyarrow table of consecutive rows ``start .. start + len(feats) - 1``."""
    import pyarrow as pa

    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if labels.ndim == 2:  # multi-label data: one fixed-size list of 0/1 per sample
        label_column = pa.FixedSizeListArray.from_arrays(labels.reshape(-1), labels.shape[1])
    else:
        label_column = pa.array(labels)
    return pa.table(
        {
            "index": pa.array(np.arange(start, start + len(feats), dtype=np.int64)),
            "id": pa.array(ids, pa.string()),
            "label": label_column,
            "class": pa.array(classes, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(feats.reshape(-1), feats.shape[1]),
        }
    )


class ParquetRows:
    """Append row tables to a parquet file, a row group every ``ROW_GROUP_ROWS`` rows.

    The schema comes from the first rows written (embedding size, label type) with
    ``metadata`` (a JSON-able dict) under the ``jepactl`` key; ``close()`` writes what is left.
    A file that got no rows is not created.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], group_rows: int = ROW_GROUP_ROWS):
        self.path, self.metadata, self.group_rows = Path(path), metadata, group_rows
        self.writer = None
        self.pending: list = []
        self.pending_rows = 0
        self.rows = 0
        self.dim: int | None = None

    def write(self, table) -> None:
        if table.num_rows == 0:
            return
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        if self.writer is None:
            schema = table.schema.with_metadata({METADATA_KEY: json.dumps(self.metadata)})
            self.writer = pq.ParquetWriter(self.path, schema)
            self.dim = table.schema.field("embedding").type.list_size
        table = table.cast(self.writer.schema)  # the metadata, and one label type throughout
        self.writer.write_table(table, row_group_size=max(self.group_rows, table.num_rows))
        self.rows += table.num_rows

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> "ParquetRows":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self.writer is not None:
            try:  # the caller's StagedFiles removes the partial file
                self.writer.close()
            except OSError:
                pass  # a full disk fails the close too: the first error tells


class NpyRows:
    """Append embeddings to an ``rows`` x D float32 .npy file and their rows to FILE.index.csv.

    The header needs D, so it is written with the first rows; rows arrive in input order.
    ``names``: the final paths of the two files (``npy``, ``index_csv`` may be temporary
    ones), named by a write error.
    """

    def __init__(
        self, npy: Path, index_csv: Path, rows: int, names: tuple[Path, Path] | None = None
    ) -> None:
        self.expected, self.rows, self.dim = rows, 0, None
        self.names = names or (npy, index_csv)
        self.handle = open(npy, "wb")
        self.index_handle = open(index_csv, "w", newline="")
        self.index = csv.writer(self.index_handle)
        self.index.writerow(["index", "id", "label", "class"])

    def write(self, table) -> None:
        if table.num_rows == 0:
            return
        embedding = table.column("embedding").combine_chunks()
        dim = embedding.type.list_size
        feats = embedding.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        with write_errors_name(self.names[0]):
            if self.dim is None:
                self.dim = dim
                header = {"descr": "<f4", "fortran_order": False, "shape": (self.expected, dim)}
                np.lib.format.write_array_header_1_0(self.handle, header)
            self.handle.write(memoryview(np.ascontiguousarray(feats)).cast("B"))
        columns = [table.column(c).to_pylist() for c in ("index", "id", "label", "class")]
        with write_errors_name(self.names[1]):
            self.index.writerows(zip(*columns))
        self.rows += table.num_rows

    def close(self) -> None:
        if self.rows != self.expected:
            raise RuntimeError(f"wrote {self.rows} rows of {self.expected}")  # a bug, not input
        with write_errors_name(self.names[0]):
            self.handle.close()
        with write_errors_name(self.names[1]):
            self.index_handle.close()

    def __enter__(self) -> "NpyRows":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
            return
        for handle in (self.handle, self.index_handle):
            try:  # flushing what is buffered fails again on a full disk: the first error tells
                handle.close()
            except OSError:
                pass


def copy_rows(parts: list[Path], sink) -> None:
    """Write the rows of parquet ``parts``, in order, to ``sink`` a row group at a time."""
    import pyarrow.parquet as pq

    for part in parts:
        reader = pq.ParquetFile(part)
        for group in range(reader.num_row_groups):
            sink.write(reader.read_row_group(group))


def file_metadata(path: Path) -> dict[str, Any]:
    """Return the ``jepactl`` schema metadata of a parquet file written by embed ({} if none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


@dataclass
class Embeddings:
    """Rows read back from an embedding file, in input order."""

    features: np.ndarray  # (N, D) float32
    ids: list[str]
    labels: np.ndarray  # (N,) or (N, C) multi-label; what the data set gave
    class_names: list[str]  # per row, "" when unlabelled
    metadata: dict[str, Any]  # encoder, data, split, classes (the data set's class names)


def read_embeddings(path: str | Path) -> Embeddings:
    """Read a .parquet file, a parquet data set folder or a .npy + .index.csv written by
    ``embed``; DataError naming the path for anything else, or for rows missing or repeated."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError(f"features '{path}' do not exist")
    if path.suffix == ".npy" and path.is_file():
        return _read_npy(path)
    metadata: dict[str, Any] = {}
    if path.is_dir():
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise DataError(
                f"features folder '{path}' has no {MANIFEST}: not an embed output, or the "
                "embed job that wrote it did not finish"
            )
        try:
            metadata = json.loads(manifest.read_text())
            files = [path / name for name in metadata["parts"]]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"'{manifest}' is not an embed manifest (no list of parts)") from None
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"features folder '{path}': {MANIFEST} lists missing {missing[0]}")
        if not files:
            raise DataError(f"features folder '{path}': {MANIFEST} lists no parts")
    else:
        files = [path]
    try:
        import pyarrow as pa

        tables = [pq.read_table(f) for f in files]
        if not path.is_dir():
            metadata = file_metadata(path)
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"features '{path}' cannot be read as parquet: {err}") from None
    missing_columns = {"index", "id", "label", "embedding"} - set(table.column_names)
    if missing_columns:
        raise DataError(
            f"features '{path}' lack the column(s) {', '.join(sorted(missing_columns))} "
            "(expected what `jepactl embed` writes)"
        )
    index = table.column("index").to_numpy()
    if len(index) > 1 and not bool(np.all(np.diff(index) > 0)):
        table = table.sort_by("index")  # parts come in input order: only a foreign file sorts
        index = table.column("index").to_numpy()
    _check_every_row_once(index, path, metadata.get("rows"))
    embedding = table.column("embedding").combine_chunks()
    if not hasattr(embedding.type, "list_size"):
        raise DataError(f"features '{path}': the embedding column is not a fixed-size list")
    feats = np.array(embedding.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    feats = feats.reshape(len(index), embedding.type.list_size)
    label_column = table.column("label").combine_chunks()
    if hasattr(label_column.type, "list_size"):
        labels = np.array(label_column.flatten().to_numpy(zero_copy_only=False))
        labels = labels.reshape(len(index), label_column.type.list_size)
    else:
        labels = np.array(label_column.to_numpy(zero_copy_only=False))
    classes = (
        table.column("class").to_pylist() if "class" in table.column_names else [""] * len(index)
    )
    return Embeddings(feats, table.column("id").to_pylist(), labels, classes, metadata)


def _read_npy(path: Path) -> Embeddings:
    index_csv = index_csv_path(path)
    if not index_csv.is_file():
        raise DataError(f"features '{path}' need their rows file '{index_csv}' (embed writes it)")
    feats = np.load(path, mmap_mode="r")
    with index_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != len(feats) or (rows and not {"index", "id", "label"} <= set(rows[0])):
        raise DataError(f"'{index_csv}' does not match '{path}' ({len(rows)} rows, {len(feats)})")
    index = np.array([int(r["index"]) for r in rows])
    _check_every_row_once(np.sort(index), path)
    order = np.argsort(index, kind="stable")
    rows = [rows[i] for i in order]
    labels = np.array([_number(r["label"]) for r in rows])
    return Embeddings(
        np.asarray(feats[order], dtype=np.float32),
        [r["id"] for r in rows],
        labels,
        [r.get("class", "") for r in rows],
        {},
    )


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise DataError(f"label '{text}' is not a number (multi-label rows: use parquet)")


def _check_every_row_once(sorted_index: np.ndarray, path: Path, rows: int | None = None) -> None:
    """DataError unless the sorted index is 0..n-1, and n the ``rows`` embed recorded."""
    if rows is not None and len(sorted_index) != rows:
        raise DataError(
            f"features '{path}' hold {len(sorted_index)} rows, but embed wrote {rows}: rows "
            "missing or added"
        )
    expected = np.arange(len(sorted_index))
    if not np.array_equal(sorted_index, expected):
        repeated = int(len(sorted_index) - len(np.unique(sorted_index)))
        raise DataError(
            f"features '{path}': the index column is not 0..{len(sorted_index) - 1} once each "
            f"({repeated} repeated; rows missing or from another embed)"
        )
