"""``jepactl embed``: one pooled embedding per sample, written as .npy or .parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jepactl.errors import UserError
from jepactl.evaluate.features import extract_features
from jepactl.evaluate.source import open_encoder
from jepactl.methods import method_module


def run_embed(run: Path, data: str, out: Path, split: str | None = None,
              which: str | None = None) -> dict:
    """Embed ``data`` with the run's (or export's) encoder; return what was written."""
    if out.suffix not in (".npy", ".parquet"):
        raise UserError(f"--out must end in .npy or .parquet, got '{out}'")
    source = open_encoder(run, which)
    dataset = method_module(source.recipe.method).eval_data(source.recipe, data, split)
    feats, labels = extract_features(source.encoder, dataset, source.recipe.probe.batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    array = feats.numpy().astype(np.float32)
    if out.suffix == ".npy":
        np.save(out, array)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        label_array = labels.numpy()
        if label_array.ndim == 2:  # multi-label data: one fixed-size list of 0/1 per sample
            label_column = pa.FixedSizeListArray.from_arrays(label_array.reshape(-1),
                                                             label_array.shape[1])
        else:
            label_column = pa.array(label_array)
        table = pa.table({
            "index": np.arange(len(array)),
            "label": label_column,
            "embedding": pa.FixedSizeListArray.from_arrays(array.reshape(-1), array.shape[1]),
        })
        pq.write_table(table, out)
    return {"out": str(out), "samples": int(array.shape[0]), "dim": int(array.shape[1])}
