"""ECG record discovery and windowed reading: WFDB (``.hea`` + ``.dat``/``.mat``) and numpy arrays.

A folder is searched recursively. Every ``.hea`` header is parsed and checked at discovery:
its signal files must exist and be long enough for the samples the header announces, so a
missing ``.dat``, a truncated file or a garbled header is found once, up front, and listed in
``ECGSource.skipped`` with its reason instead of failing mid-run. ``.npy``/``.npz`` arrays are
``leads x samples`` (a 1-D array is one lead) at a rate the recipe gives; every row is kept,
named by ``array_leads`` or, with ``array_rows_by_position``, standing for the recipe's leads in
order whatever they are called. A WFDB channel without a name is called ``ch<k>``.

A record whose samples are all NaN (every lead) holds no signal and would only train on zeros,
so discovery skips it ("all samples are NaN"). Arrays are checked whole (block by block, stopping
at the first finite value, so a healthy array costs one small read). A WFDB record has to be
decoded to be checked, so the check is bounded: a record of at most a minute is read whole, a
longer one at six evenly spaced 10 s chunks (the first and the last included), and it is skipped
only when every sample read is NaN. A record with *some* NaN is kept: the window reader
interpolates the gaps.

Reading is always by window (``read_window``): ``wfdb.rdrecord(sampfrom, sampto)`` seeks to the
bytes it needs and ``.npy`` files are memory-mapped, so memory stays bounded by the window size
however long (30-minute Holter files) or numerous the records are. ``.npz`` archives cannot be
memory-mapped and are read whole, one record at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jepactl.errors import DataError

log = logging.getLogger("jepactl")

# Bytes per sample of each WFDB storage format (wfdb-python reads all of these; the FLAC
# formats 508/516/524 are compressed, so their size cannot be checked from the header).
_BYTES_PER_SAMPLE = {
    "8": 1.0,
    "16": 2.0,
    "61": 2.0,
    "80": 1.0,
    "160": 2.0,
    "212": 1.5,
    "24": 3.0,
    "32": 4.0,
    "310": 4 / 3,
    "311": 4 / 3,
}
# MATLAB v4 files written by wfdb2mat: a 20-byte matrix header plus the variable name "val".
_MAT_HEADER_BYTES = 24
# The all-NaN check of WFDB records (see the module docstring).
_NAN_CHECK_WHOLE_SECONDS = 60.0
_NAN_CHECK_CHUNKS = 6
_NAN_CHECK_CHUNK_SECONDS = 10.0
_NAN_CHECK_ARRAY_BLOCK = 1 << 16  # array columns per block


@dataclass
class ECGRecord:
    """One readable record: where it is, its native rate and length, and its lead names."""

    path: Path  # WFDB record path without extension, or the .npy/.npz file
    name: str  # path relative to the searched folder, without suffix (e.g. "g1/E07500")
    kind: str  # "wfdb", "npy" or "npz"
    fs: float
    length: int  # samples per lead at ``fs``
    leads: list[str]
    comments: list[str] = field(default_factory=list)  # WFDB header comment lines
    layout: "FlatLayout | None" = None  # set when read_window can decode the file itself
    by_position: bool = False  # array rows are the recipe's leads in order, whatever their names

    @property
    def seconds(self) -> float:
        return self.length / self.fs


@dataclass
class FlatLayout:
    """One signal file of interleaved samples in a simple format, decoded without wfdb.

    ``wfdb.rdrecord`` re-parses the header (with pandas) on every call, which costs ~40 ms, far
    more than the read; records in the common formats are decoded here directly from the
    header parsed once at discovery. Everything else goes through ``wfdb.rdrecord``.
    """

    file: Path
    fmt: str  # "16", "212", "80", "24" or "32"
    offset: int  # bytes before the first frame
    channels: int
    gain: list[float]
    baseline: list[float]


_FLAT_FORMATS = {"16": 2, "80": 1, "24": 3, "32": 4}  # bytes per sample; "212" handled apart
_INVALID = {"16": -32768, "212": -2048, "80": -128, "24": -(2**23), "32": -(2**31)}


def _flat_layout(header, record_path: Path) -> FlatLayout | None:
    """Return the fast-path layout of a single-file record in a plain format, else None."""
    names, fmts = set(header.file_name), set(str(f) for f in header.fmt)
    spf = set(header.samps_per_frame or [1]) - {None}
    skew = set(header.skew or [0]) - {None}
    if len(names) != 1 or len(fmts) != 1 or spf - {1} or skew - {0}:
        return None
    fmt = fmts.pop()
    if fmt not in _FLAT_FORMATS and fmt != "212":
        return None
    offset = (header.byte_offset or [None])[0]
    name = names.pop()
    offset = offset if offset is not None else (_MAT_HEADER_BYTES if name.endswith(".mat") else 0)
    gains = [float(g) if g else 200.0 for g in header.adc_gain]  # WFDB's default gain
    return FlatLayout(
        record_path.parent / name,
        fmt,
        int(offset),
        int(header.n_sig),
        gains,
        [float(b or 0) for b in header.baseline],
    )


def _decode_flat(layout: FlatLayout, start: int, stop: int) -> np.ndarray:
    """Return physical samples [start, stop) of a FlatLayout file as (leads, n) float32."""
    n, c = stop - start, layout.channels
    with open(layout.file, "rb") as handle:
        if layout.fmt == "212":  # two 12-bit samples packed in 3 bytes, counted over all leads
            first = start * c
            total = n * c
            byte0 = layout.offset + (first // 2) * 3
            handle.seek(byte0)
            raw = np.frombuffer(handle.read(((first % 2 + total + 1) // 2) * 3), dtype=np.uint8)
            raw = raw[: len(raw) // 3 * 3].reshape(-1, 3).astype(np.int32)
            pairs = np.empty((len(raw), 2), dtype=np.int32)
            pairs[:, 0] = raw[:, 0] | ((raw[:, 1] & 0x0F) << 8)
            pairs[:, 1] = raw[:, 2] | ((raw[:, 1] & 0xF0) << 4)
            values = pairs.reshape(-1)[first % 2 : first % 2 + total]
            values = np.where(values > 2047, values - 4096, values)
        else:
            size = _FLAT_FORMATS[layout.fmt]
            handle.seek(layout.offset + start * c * size)
            buf = handle.read(n * c * size)
            if layout.fmt == "24":
                b = np.frombuffer(buf, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
                values = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
                values = np.where(values >= 2**23, values - 2**24, values)
            else:
                dtype = {"16": "<i2", "32": "<i4"}.get(layout.fmt)
                values = (
                    np.frombuffer(buf, dtype=dtype).astype(np.int64)
                    if dtype
                    else np.frombuffer(buf, dtype=np.uint8).astype(np.int64) - 128
                )
    digital = values.reshape(-1, c).T
    physical = (digital - np.array(layout.baseline)[:, None]) / np.array(layout.gain)[:, None]
    physical = physical.astype(np.float32)
    physical[digital == _INVALID[layout.fmt]] = np.nan  # WFDB's "no sample" value
    return physical


@dataclass
class ECGSource:
    """The records found under ``root`` and the files that were skipped (``path: reason``)."""

    root: Path
    records: list[ECGRecord]
    skipped: list[str]

    @property
    def name(self) -> str:
        return str(self.root)

    def __len__(self) -> int:
        return len(self.records)


def _check_signal_files(header, record_path: Path) -> str | None:
    """Return why the header's signal files cannot be read, or None when they look complete."""
    folder = record_path.parent
    per_file: dict[str, list[int]] = {}
    for channel, name in enumerate(header.file_name or []):
        per_file.setdefault(name, []).append(channel)
    if not per_file:
        return "header lists no signal files"
    for name, channels in per_file.items():
        file = folder / name
        if not file.is_file():
            return f"signal file '{name}' is missing"
        fmt = str(header.fmt[channels[0]])
        if fmt not in _BYTES_PER_SAMPLE:
            continue
        frame = sum(
            (header.samps_per_frame[c] or 1) if header.samps_per_frame else 1 for c in channels
        )
        offset = header.byte_offset[channels[0]] if header.byte_offset else None
        if offset is None:
            offset = _MAT_HEADER_BYTES if name.endswith(".mat") else 0
        need = int(offset + np.ceil(header.sig_len * frame * _BYTES_PER_SAMPLE[fmt]))
        have = file.stat().st_size
        if have < need:
            return (
                f"signal file '{name}' is truncated: {have} bytes, the header needs {need} "
                f"({header.sig_len} samples x {frame} values in format {fmt})"
            )
    return None


def _wfdb_record(header_file: Path, root: Path) -> ECGRecord:
    """Return the record described by ``header_file``; raise ValueError saying what is wrong."""
    import wfdb

    record_path = header_file.with_suffix("")
    try:
        header = wfdb.rdheader(str(record_path))
    except Exception as err:  # wfdb raises HeaderSyntaxError, ValueError, IndexError, ...
        raise ValueError(
            f"bad header: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if getattr(header, "n_seg", None):
        raise ValueError("multi-segment records are not supported")
    if not header.n_sig or not header.sig_len or not header.fs:
        raise ValueError("header announces no signals, no samples or no sampling rate")
    problem = _check_signal_files(header, record_path)
    if problem:
        raise ValueError(problem)
    names = [
        str(name) if name else f"ch{k}"
        for k, name in enumerate(header.sig_name or [None] * header.n_sig)
    ]
    record = ECGRecord(
        record_path,
        str(record_path.relative_to(root)),
        "wfdb",
        float(header.fs),
        int(header.sig_len),
        names,
        [str(c) for c in (header.comments or [])],
        _flat_layout(header, record_path),
    )
    if _wfdb_all_nan(record):
        raise ValueError("all samples are NaN")
    return record


def _wfdb_all_nan(record: ECGRecord) -> bool:
    """Return True when every sample the bounded check reads is NaN (module docstring)."""
    if record.seconds <= _NAN_CHECK_WHOLE_SECONDS:
        spans = [(0, record.length)]
    else:
        chunk = int(_NAN_CHECK_CHUNK_SECONDS * record.fs)
        starts = np.linspace(0, record.length - chunk, _NAN_CHECK_CHUNKS).astype(int)
        spans = [(int(s), int(s) + chunk) for s in starts]
    try:
        return all(np.isnan(read_window(record, start, stop)).all() for start, stop in spans)
    except DataError as err:
        raise ValueError(str(err)) from None


def _array_all_nan(array: np.ndarray) -> bool:
    """Return True when every value of a (leads, samples) array is NaN, reading block by block."""
    if not np.issubdtype(array.dtype, np.floating):
        return False
    for start in range(0, array.shape[1], _NAN_CHECK_ARRAY_BLOCK):
        if not np.isnan(array[:, start : start + _NAN_CHECK_ARRAY_BLOCK]).all():
            return False
    return True


def _as_leads_by_samples(array: np.ndarray) -> np.ndarray:
    """Return ``array`` as (leads, samples): a 1-D array is one lead."""
    return array[None, :] if array.ndim == 1 else array


def _array_record(
    file: Path, root: Path, fs: float, lead_names: list[str], by_position: bool
) -> ECGRecord:
    """Return a record for a ``leads x samples`` (or 1-D, one lead) .npy or .npz array."""
    if file.suffix == ".npy":
        array = np.load(file, mmap_mode="r")
    else:
        with np.load(file) as archive:
            if not archive.files:
                raise ValueError("empty .npz archive")
            array = archive[archive.files[0]]
    if array.ndim not in (1, 2) or min(array.shape) == 0:
        raise ValueError(
            f"expected a 1-D (samples) or 2-D (leads x samples) array, got shape {array.shape}"
        )
    array = _as_leads_by_samples(array)
    if _array_all_nan(array):
        raise ValueError("all samples are NaN")
    leads, samples = array.shape
    names = list(lead_names[:leads]) + [f"ch{i}" for i in range(len(lead_names), leads)]
    return ECGRecord(
        file,
        str(file.relative_to(root).with_suffix("")),
        file.suffix[1:],
        fs,
        int(samples),
        names,
        by_position=by_position,
    )


def open_records(
    path: str | os.PathLike,
    array_rate: float,
    array_leads: list[str],
    array_rows_by_position: bool = False,
) -> ECGSource:
    """Return every readable record under ``path`` (a folder, a ``.hea`` or an array file).

    Array rows are named by ``array_leads`` (``ch<k>`` past its end); with
    ``array_rows_by_position`` row k stands for the recipe's k-th lead whatever its name
    (``ECGRecord.by_position``). Unreadable and all-NaN records are listed in ``skipped``; a
    DataError is raised when nothing readable is left, naming the folder and the first problem.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"data path '{root}' does not exist")
    if root.is_file():
        files, base = [root], root.parent
    else:
        files = sorted(
            p
            for p in root.rglob("*")
            if p.suffix.lower() in (".hea", ".npy", ".npz") and p.is_file()
        )
        base = root
    records, skipped = [], []
    for file in files:
        try:
            if file.suffix.lower() == ".hea":
                records.append(_wfdb_record(file, base))
            elif file.suffix.lower() in (".npy", ".npz"):
                records.append(
                    _array_record(file, base, array_rate, array_leads, array_rows_by_position)
                )
            else:
                raise ValueError("not a .hea, .npy or .npz file")
        except (ValueError, OSError) as err:
            skipped.append(f"{file}: {err}")
    if skipped and records:
        log.warning(
            "skipped %d unreadable or all-NaN record file(s) under %s; first: %s",
            len(skipped),
            root,
            skipped[0],
        )
    if not records:
        if skipped:
            raise DataError(
                f"no readable ECG record under '{root}' ({len(skipped)} skipped; "
                f"first: {skipped[0]})"
            )
        raise DataError(
            f"no ECG records under '{root}' (looked for WFDB .hea files and "
            ".npy/.npz arrays, recursively)"
        )
    return ECGSource(root, records, skipped)


def read_window(record: ECGRecord, start: int, stop: int) -> np.ndarray:
    """Return samples [start, stop) of every lead as a float32 array (leads, stop - start).

    WFDB signals come in physical units (mV as the header's gain gives them). ``start`` and
    ``stop`` are clamped to the record.
    """
    start, stop = max(0, int(start)), min(record.length, int(stop))
    if stop <= start:
        return np.zeros((len(record.leads), 0), dtype=np.float32)
    try:
        if record.layout is not None:
            return _decode_flat(record.layout, start, stop)
        if record.kind == "wfdb":
            import wfdb

            signal = wfdb.rdrecord(
                str(record.path), sampfrom=start, sampto=stop, physical=True
            ).p_signal
            return np.ascontiguousarray(signal.T, dtype=np.float32)
        if record.kind == "npy":
            array = _as_leads_by_samples(np.load(record.path, mmap_mode="r"))
            return np.asarray(array[:, start:stop], dtype=np.float32)
        with np.load(record.path) as archive:
            array = _as_leads_by_samples(archive[archive.files[0]])
            return np.asarray(array[:, start:stop], dtype=np.float32)
    except (ValueError, OSError, IndexError) as err:
        raise DataError(f"cannot read samples {start}-{stop} of '{record.path}': {err}") from None
