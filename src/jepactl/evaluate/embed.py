"""``jepactl embed``: one pooled embedding per sample, written as .npy or .parquet.

Each row can be joined back to its source: the parquet file has columns ``index``, ``id`` (the
sample's file path or record name where the data set knows it, else its index), ``label``,
``class`` (the label's name) and ``embedding``; next to a .npy file the same columns without
the embedding go to ``FILE.index.csv``.

``--out`` is checked for writability before any embedding is computed (a large data set takes
hours), and the file is written to a temporary name then renamed, so a full disk leaves a
previous embedding file intact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jepactl.errors import UserError
from jepactl.evaluate.features import extract_features
from jepactl.evaluate.source import open_encoder
from jepactl.output_paths import StagedFiles, check_writable_file, save_npy
from jepactl.registry import method_spec


def run_embed(
    run: Path,
    data: str,
    out: Path,
    split: str | None = None,
    which: str | None = None,
    checkpoint: str = "last",
) -> dict:
    """Embed ``data`` with the run's (or export's) encoder; return what was written.

    ``checkpoint``: the run's "last", "best" (by the online probe) or a step number as text.
    """
    if out.suffix not in (".npy", ".parquet"):
        raise UserError(f"--out must end in .npy or .parquet, got '{out}'")
    check_writable_file(out, "--out")
    source = open_encoder(run, which, checkpoint=checkpoint)
    eval_data = method_spec(source.recipe.method).require("eval_data")
    dataset = eval_data(source.recipe, data, split)
    feats, labels = extract_features(
        source.encoder, dataset, source.recipe.probe.batch_size, description="embed"
    )
    array = feats.numpy().astype(np.float32)
    ids = sample_ids(dataset)
    classes = class_names(labels.numpy(), getattr(dataset, "classes", []))
    written = {"out": str(out)}
    with StagedFiles() as stage:
        if out.suffix == ".npy":
            save_npy(stage.path(out), array)
            index = out.with_name(out.name[: -len(".npy")] + ".index.csv")
            write_index_csv(stage.path(index), ids, labels.numpy(), classes)
            written["index"] = str(index)
        else:
            write_parquet(stage.path(out), array, labels.numpy(), ids, classes)
    return {
        **written,
        "encoder": source.tag,
        "samples": int(array.shape[0]),
        "dim": int(array.shape[1]),
    }


def sample_ids(dataset) -> list[str]:
    """Return each sample's source: ``dataset.sample_ids()`` where a data set defines it (file
    paths, record names), else the sample's index as text."""
    named = getattr(dataset, "sample_ids", None)
    ids = list(named()) if callable(named) else []
    return (
        [str(i) for i in ids] if len(ids) == len(dataset) else [str(i) for i in range(len(dataset))]
    )


def class_names(labels: np.ndarray, classes: list[str]) -> list[str]:
    """Return each single label's class name ("" when unlabelled or multi-label)."""
    if labels.ndim != 1 or not classes:
        return [""] * len(labels)
    return [classes[int(y)] if 0 <= int(y) < len(classes) else "" for y in labels]


def write_index_csv(path: Path, ids: list[str], labels: np.ndarray, classes: list[str]) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "id", "label", "class"])
        for i, (name, label, cls) in enumerate(zip(ids, labels.tolist(), classes)):
            writer.writerow([i, name, label, cls])


def write_parquet(
    path: Path,
    array: np.ndarray,
    label_array: np.ndarray,
    ids: list[str] | None = None,
    classes: list[str] | None = None,
) -> None:
    """Write columns index, id, label, class, embedding (a fixed-size float32 list per row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if label_array.ndim == 2:  # multi-label data: one fixed-size list of 0/1 per sample
        label_column = pa.FixedSizeListArray.from_arrays(
            label_array.reshape(-1), label_array.shape[1]
        )
    else:
        label_column = pa.array(label_array)
    table = pa.table(
        {
            "index": np.arange(len(array)),
            "id": pa.array(ids or [str(i) for i in range(len(array))]),
            "label": label_column,
            "class": pa.array(classes or [""] * len(array)),
            "embedding": pa.FixedSizeListArray.from_arrays(array.reshape(-1), array.shape[1]),
        }
    )
    pq.write_table(table, path)
