"""``jepactl embed``: one pooled embedding per sample, written as .npy or .parquet.

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
    run: Path, data: str, out: Path, split: str | None = None, which: str | None = None
) -> dict:
    """Embed ``data`` with the run's (or export's) encoder; return what was written."""
    if out.suffix not in (".npy", ".parquet"):
        raise UserError(f"--out must end in .npy or .parquet, got '{out}'")
    check_writable_file(out, "--out")
    source = open_encoder(run, which)
    eval_data = method_spec(source.recipe.method).require("eval_data")
    dataset = eval_data(source.recipe, data, split)
    feats, labels = extract_features(source.encoder, dataset, source.recipe.probe.batch_size)
    array = feats.numpy().astype(np.float32)
    with StagedFiles() as stage:
        if out.suffix == ".npy":
            save_npy(stage.path(out), array)
        else:
            write_parquet(stage.path(out), array, labels.numpy())
    return {"out": str(out), "samples": int(array.shape[0]), "dim": int(array.shape[1])}


def write_parquet(path: Path, array: np.ndarray, label_array: np.ndarray) -> None:
    """Write columns index, label, embedding (a fixed-size list of float32 per sample)."""
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
            "label": label_column,
            "embedding": pa.FixedSizeListArray.from_arrays(array.reshape(-1), array.shape[1]),
        }
    )
    pq.write_table(table, path)
