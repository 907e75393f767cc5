"""``jepactl embed``: one pooled embedding per sample, in input order, on one or many processes.

Each row can be joined back to its source: columns ``index`` (the sample's position in the
input), ``id`` (the sample's file path or record name where the data set knows it, else its
index), ``label``, ``class`` (the label's name) and ``embedding``. ``--out`` picks the form
(``embedding_files.py``): ``FILE.parquet``, ``FILE.npy`` (+ ``FILE.index.csv``), or a folder
holding a parquet data set with one ``part-<rank>-of-<N>.parquet`` per process and a
``_manifest.json`` written last.

Under N processes (``accelerate launch``, ``torchrun``, also in a SLURM job: ``WORLD_SIZE`` > 1)
rank r embeds the contiguous slice of batches ``[r * b // N, (r + 1) * b // N)`` of the b
batches (``probe.batch_size`` samples each) of the n inputs, on its own device, and writes its
rows as they come to ``.OUT.parts-of-N/part-r-of-N.parquet`` beside ``--out`` (so ``--out``
must be on a file system every node sees). After a barrier rank 0 checks every part holds its
slice's row count (and that every rank saw n inputs), then moves the parts into the folder
(folder ``--out``) or copies them, a row group at a time, into the one file
(``.parquet``/``.npy``), and removes the staging folder. Contiguous slices keep the parts in
input order, so the merged file needs no sort and a folder read in file-name order is in input
order; the slices are disjoint and cover the input, so every input is one row; and each batch
holds the samples it holds on one process, so the embeddings equal one process's.

Memory per process is one row group (``ROW_GROUP_ROWS`` rows) whatever the data set's size.
``--out`` is checked for writability before any embedding is computed, and every file is
written to a temporary name then renamed, so a failure (full disk, a rank that dies) leaves the
previous output intact.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from jepactl.errors import DataError, UserError
from jepactl.evaluate.embedding_files import (
    MANIFEST,
    PART_NAME,
    NpyRows,
    ParquetRows,
    copy_rows,
    file_metadata,
    index_csv_path,
    output_form,
    part_name,
    rows_table,
)
from jepactl.evaluate.features import iter_features
from jepactl.evaluate.source import open_encoder
from jepactl.output_paths import StagedFiles, check_writable_file, check_writable_folder
from jepactl.registry import method_spec
from jepactl.version import __version__

# Ranks wait at the barrier for the slowest one to finish its slice: a long embedding must not
# trip the process group's default timeout (10 to 30 minutes).
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


def shard_range(samples: int, rank: int, world: int, batch_size: int = 1) -> range:
    """Return the contiguous slice of ``samples`` inputs that ``rank`` of ``world`` embeds:
    whole batches of ``batch_size`` (so every batch holds the samples it holds on one
    process), disjoint, covering every input, sizes differing by at most one batch."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    batches = -(-samples // batch_size)
    first, last = rank * batches // world, (rank + 1) * batches // world
    return range(min(first * batch_size, samples), min(last * batch_size, samples))


def launch_world() -> tuple[int, int]:
    """Return (rank, world size) from the launcher's environment (torchrun, accelerate launch);
    (0, 1) when launched alone."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def run_embed(
    run: Path,
    data: str,
    out: str | Path,
    split: str | None = None,
    which: str | None = None,
    checkpoint: str = "last",
) -> dict:
    """Embed ``data`` with the run's (or export's) encoder; return what was written.

    ``checkpoint``: the run's "last", "best" (by the online probe) or a step number as text.
    ``out``: a .npy or .parquet file, or a folder for a parquet data set (``output_form``).
    """
    form = output_form(out)
    out = Path(out)
    check_output(out, form)
    rank, world = launch_world()
    state = None
    device = None
    if world > 1:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available(), timeout=BARRIER_TIMEOUT)
        rank, world, device = state.process_index, state.num_processes, state.device
    try:
        source = open_encoder(run, which, checkpoint=checkpoint)
        eval_data = method_spec(source.recipe.method).require("eval_data")
        dataset = eval_data(source.recipe, data, split)
        samples = len(dataset)
        if samples == 0:
            raise DataError(f"'{data}' holds no samples to embed")
        metadata = {
            "jepactl": __version__,
            "run": str(Path(run).resolve()),
            "recipe": source.recipe.name,
            "encoder": source.tag,
            "data": str(data),
            "split": split,
            "classes": [str(c) for c in getattr(dataset, "classes", [])],
            "rows": samples,
        }
        batch_size = source.recipe.probe.batch_size
        shard = shard_range(samples, rank, world, batch_size)
        rows = Rows(dataset, source.encoder, batch_size, device)
        result = {"out": str(out), "encoder": source.tag, "samples": samples}
        if world == 1 and form != "folder":
            with StagedFiles() as stage:
                if form == "npy":
                    index = index_csv_path(out)
                    sink = NpyRows(stage.path(out), stage.path(index), samples, names=(out, index))
                    result["index"] = str(index)
                else:
                    sink = ParquetRows(stage.path(out), metadata)
                with sink:
                    rows.write(shard, sink, "embed")
            return {**result, "dim": sink.dim, "processes": 1}
        staging = staging_folder(out, world)
        dim = None
        if len(shard) > 0:  # fewer inputs than processes: the idle ranks write no part
            with StagedFiles() as stage:
                with ParquetRows(stage.path(staging / part_name(rank, world)), metadata) as sink:
                    # one progress line (rank 0's), not one per process
                    rows.write(shard, sink, f"embed rank 0 of {world}" if rank == 0 else None)
            dim = sink.dim
        if state is not None:
            wait_for_every_part(state)
        if rank != 0:
            return {**result, "dim": dim, "processes": world, "rank": rank}
        parts = staged_parts(staging, samples, world, batch_size)
        if form == "folder":
            written = publish_folder(parts, out, {**metadata, "processes": world})
        else:
            written = merge_parts(parts, out, form, metadata, samples)
        remove_staging(staging, parts)
        return {**result, **written, "processes": world}
    finally:
        if state is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def wait_for_every_part(state) -> None:
    """The barrier after the parts; a process that failed (its own error is on stderr) breaks it
    for the others, which then stop with one line, not the process group's traceback."""
    try:
        state.wait_for_everyone()
    except RuntimeError as err:  # torch.distributed's DistBackendError is one
        raise UserError(
            f"rank {state.process_index}: another process stopped before writing its part (its "
            "error is above); nothing was published, the previous output is untouched"
        ) from err


class Rows:
    """Embeds slices of a data set and writes them, with their ids and class names, to a sink."""

    def __init__(self, dataset, encoder, batch_size: int, device: torch.device | None) -> None:
        self.dataset, self.encoder = dataset, encoder
        self.batch_size, self.device = batch_size, device
        self.ids = sample_ids(dataset)
        self.classes = list(getattr(dataset, "classes", []))

    def write(self, shard: range, sink, description: str | None) -> None:
        position = shard.start
        if len(shard) == 0:
            return
        for feats, labels in iter_features(
            self.encoder,
            Subset(self.dataset, shard),
            self.batch_size,
            description=description,
            device=self.device,
        ):
            labels = labels.numpy()
            stop = position + len(feats)
            sink.write(
                rows_table(
                    position,
                    feats.numpy(),
                    labels,
                    self.ids[position:stop],
                    class_names(labels, self.classes),
                )
            )
            position = stop
        if position != shard.stop:
            raise RuntimeError(f"embedded {position - shard.start} rows of {len(shard)}")


def check_output(out: Path, form: str) -> None:
    """Raise UserError before any work unless ``out`` can be written in ``form``; a folder must
    be new, empty or hold only a previous embedding (its parts and manifest, which the new
    ones replace)."""
    if form != "folder":
        check_writable_file(out, "--out")
        return
    check_writable_folder(out, "--out")
    if out.is_dir():
        foreign = sorted(
            p.name
            for p in out.iterdir()
            if not (PART_NAME.match(p.name) or p.name == MANIFEST or p.name.startswith("."))
        )
        if foreign:
            raise UserError(
                f"--out '{out}' holds files that are not embedding parts ({foreign[0]}, ...): "
                "give a new or empty folder, or one a previous embed wrote"
            )


def staging_folder(out: Path, world: int) -> Path:
    """Where the ranks write their parts before rank 0 publishes them: hidden, beside ``out``
    (on the same file system, so moving a part is a rename)."""
    absolute = Path(os.path.abspath(out))
    return absolute.parent / f".{absolute.name}.parts-of-{world}"


def staged_parts(staging: Path, samples: int, world: int, batch_size: int = 1) -> list[Path]:
    """Return the parts in rank order, each checked to hold its slice's row count (a rank with
    an empty slice writes none); DataError naming what is missing."""
    import pyarrow.parquet as pq

    parts = []
    for rank in range(world):
        expected = len(shard_range(samples, rank, world, batch_size))
        if expected == 0:
            continue
        part = staging / part_name(rank, world)
        if not part.is_file():
            raise DataError(f"embedding part '{part}' is missing: rank {rank} did not write it")
        rows = pq.read_metadata(part).num_rows
        if rows != expected:
            raise DataError(f"embedding part '{part}' holds {rows} rows, expected {expected}")
        seen = file_metadata(part).get("rows", samples)
        if seen != samples:  # each rank lists the data itself: they must agree
            raise DataError(
                f"rank {rank} found {seen} samples in the data, rank 0 {samples}: the data "
                "changed during the job, or the nodes see different files"
            )
        parts.append(part)
    return parts


def publish_folder(parts: list[Path], out: Path, metadata: dict) -> dict:
    """Move ``parts`` into folder ``out``, remove a previous embedding's other parts there, then
    write ``_manifest.json`` (last: a reader that finds it finds every part)."""
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    names = [p.name for p in parts]
    part_rows = [pq.read_metadata(p).num_rows for p in parts]
    dim = pq.read_schema(parts[0]).field("embedding").type.list_size
    for part in parts:
        os.replace(part, out / part.name)
    for old in out.iterdir():
        if PART_NAME.match(old.name) and old.name not in names:
            old.unlink()
    manifest = {**metadata, "dim": dim, "parts": names, "part_rows": part_rows}
    with StagedFiles() as stage:
        stage.path(out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"manifest": str(out / MANIFEST), "parts": len(parts), "dim": dim}


def merge_parts(parts: list[Path], out: Path, form: str, metadata: dict, samples: int) -> dict:
    """Copy ``parts`` in rank order into the one ``out`` file, a row group at a time."""
    with StagedFiles() as stage:
        if form == "npy":
            index = index_csv_path(out)
            with NpyRows(stage.path(out), stage.path(index), samples, (out, index)) as sink:
                copy_rows(parts, sink)
            written = {"index": str(index)}
        else:
            with ParquetRows(stage.path(out), metadata) as sink:
                copy_rows(parts, sink)
            written = {}
    return {**written, "dim": sink.dim}


def remove_staging(staging: Path, parts: list[Path]) -> None:
    """Remove the parts (merged ones; published ones are gone already), a failed earlier
    job's parts under the same names, and the staging folder if nothing else is in it."""
    for part in [*parts, *staging.glob("part-*-of-*.parquet")]:
        if PART_NAME.match(part.name):
            part.unlink(missing_ok=True)
    try:
        staging.rmdir()
    except OSError:
        pass  # something else is in it (a crashed rank's temporary file): left for the user


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
