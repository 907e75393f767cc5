"""ECG windows as tensors: lead selection, NaN repair, resampling, normalisation, crops.

Every sample is a window of ``n`` samples at the recipe's rate, cut from a record by
``ECGWindowReader.read`` in five steps:

1. read only the source samples the window needs (plus a 0.25 s margin when resampling, so
   the polyphase filter has no edge transient inside the window);
2. pick the recipe's leads by name (case-insensitive; ``MLII`` counts as ``II``; ``"V1|V2"``
   takes the first of the alternatives a record has);
3. fill NaN gaps by linear interpolation along time;
4. resample with ``scipy.signal.resample_poly`` (anti-aliased) to ``data.sample_rate``;
5. standardise each lead over the window (zero mean, unit variance) and clip to
   ``+-data.clip``. ECG-JEPA normalises with per-dataset statistics; a per-window statistic
   needs no pass over the data and is indifferent to each dataset's units and gain.

Missing leads (documented policy): a lead the recipe asks for that a record lacks is all
zeros, so the all-lead Conv1d patch sees no signal from it (``lead_mask`` says which leads
were real). A lead that *no* record has is reported once as a warning; a multi-lead record
with none of the recipe's leads is skipped; data where no record has any of them is an error.

Single-lead records just work: a record with one lead whose name is none of the recipe's
(``ECG``, ``lead1``, an unnamed channel) is read as the recipe's first lead, ``data.leads[0]``,
with one notice per data set naming the mapping; refusing it would leave single-lead devices
(Holters, patches, watches) untrainable under the default recipe. Array rows have no names
of their own: unless ``data.array_leads`` names them, row k *is* the recipe's k-th lead (a
recipe alias like ``V1|V2|V4|V5`` is not a name a row could be matched by).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from jepactl.data.sampling import SampleKey
from jepactl.domains.ecg.wfdb import ECGRecord, ECGSource, open_records, read_window
from jepactl.errors import DataError

log = logging.getLogger("jepactl")

TWELVE_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# MIT-BIH inter-patient split (de Chazal et al. 2004); paced records 102, 104, 107, 217 left out.
MITBIH_DS1 = (
    "101",
    "106",
    "108",
    "109",
    "112",
    "114",
    "115",
    "116",
    "118",
    "119",
    "122",
    "124",
    "201",
    "203",
    "205",
    "207",
    "208",
    "209",
    "215",
    "220",
    "223",
    "230",
)
MITBIH_DS2 = (
    "100",
    "103",
    "105",
    "111",
    "113",
    "117",
    "121",
    "123",
    "200",
    "202",
    "210",
    "212",
    "213",
    "214",
    "219",
    "221",
    "222",
    "228",
    "231",
    "232",
    "233",
    "234",
)
EMBEDDED_PATH = Path(__file__).resolve().parent / "embedded" / "mitdb"
_ALIASES = {"mlii": "ii", "mli": "i", "mliii": "iii"}
_MARGIN_SECONDS = 0.25


@dataclass
class ECGDataConfig:
    """Where ECG records come from and how they become (leads, samples) tensors."""

    path: str | None = None  # folder/file of WFDB or .npy/.npz records; null: embedded MIT-BIH
    sample_rate: int = 500  # Hz, every record is resampled to it
    leads: tuple[str, ...] = TWELVE_LEADS  # channel order; "A|B" = first of A, B a record has
    crop_seconds: float = 10.0  # pretraining crop length
    clip: float = 5.0  # after per-lead standardisation
    array_sample_rate: float = 500.0  # rate of .npy/.npz arrays (leads x samples)
    array_leads: tuple[str, ...] = ()  # lead names of array rows; empty: the recipe's leads
    labels: str = "auto"  # auto, beats (.atr), dx (# Dx: header codes), ptbxl, csv
    label_csv: str | None = None  # record,label file for labels=csv
    ptbxl_task: str = "all"  # all (every SCP statement) or superdiagnostic (5 classes)
    train_records: tuple[str, ...] = MITBIH_DS1  # beat-label splits by record name
    test_records: tuple[str, ...] = MITBIH_DS2
    pretrain_split: str = "all"  # all, or train: pretrain only on the training split's records
    min_epoch_samples: int = 0  # pad a small data set's epoch to this many crops (0: batch size)

    def samples(self, seconds: float) -> int:
        return int(round(seconds * self.sample_rate))


def _norm(name: str) -> str:
    key = name.strip().casefold().replace(" ", "").replace("-", "")
    return _ALIASES.get(key, key)


def _map_by_name(record: ECGRecord, wanted: tuple[str, ...]) -> list[int]:
    """Return, per wanted lead, the channel whose name matches it (-1 when none does)."""
    have = {}
    for channel, name in enumerate(record.leads):
        have.setdefault(_norm(name), channel)
    return [
        next((have[_norm(a)] for a in lead.split("|") if _norm(a) in have), -1) for lead in wanted
    ]


def _is_unmatched_single_lead(record: ECGRecord, wanted: tuple[str, ...]) -> bool:
    """True for a one-lead record whose lead has none of the wanted names (read as wanted[0])."""
    return (
        len(record.leads) == 1
        and not record.by_position
        and len(wanted) > 0
        and max(_map_by_name(record, wanted)) < 0
    )


def lead_map(record: ECGRecord, wanted: tuple[str, ...]) -> list[int]:
    """Return, per wanted lead, the record's channel index (-1 when the record lacks it).

    Array rows without names map by position (row k -> wanted lead k); an unmatched single
    lead is the first wanted lead (module docstring).
    """
    if record.by_position:
        return [k if k < len(record.leads) else -1 for k in range(len(wanted))]
    if _is_unmatched_single_lead(record, wanted):
        return [0] + [-1] * (len(wanted) - 1)
    return _map_by_name(record, wanted)


def open_ecg(path: str | None, cfg: ECGDataConfig) -> ECGSource:
    """Return the records under ``path`` (the embedded sample when None) that have a wanted lead."""
    root = Path(path) if path is not None else EMBEDDED_PATH
    # Without data.array_leads, array rows are the recipe's leads by position; they are named
    # after each lead's first alternative only for messages.
    row_names = list(cfg.array_leads) or [lead.split("|")[0] for lead in cfg.leads]
    source = open_records(
        root, cfg.array_sample_rate, row_names, array_rows_by_position=not cfg.array_leads
    )
    kept, present = [], np.zeros(len(cfg.leads), dtype=int)
    single_lead_names: dict[str, int] = {}
    for record in source.records:
        mapping = np.array(lead_map(record, cfg.leads))
        if (mapping < 0).all():
            source.skipped.append(
                f"{record.path}: has none of the leads in data.leads "
                f"(it has {', '.join(record.leads)})"
            )
            continue
        if _is_unmatched_single_lead(record, cfg.leads):
            single_lead_names[record.leads[0]] = single_lead_names.get(record.leads[0], 0) + 1
        present += mapping >= 0
        kept.append(record)
    if not kept:
        raise DataError(
            f"no record under '{root}' has any lead in data.leads "
            f"({', '.join(cfg.leads)}); set data.leads to the data's lead names"
        )
    if single_lead_names:
        count = sum(single_lead_names.values())
        names = ", ".join(f"'{name}'" for name in single_lead_names)
        log.warning(
            "%d single-lead record%s (lead%s %s) %s used as lead %s (data.leads[0])",
            count,
            "s" if count > 1 else "",
            "s" if len(single_lead_names) > 1 else "",
            names,
            "are" if count > 1 else "is",
            cfg.leads[0],
        )
    absent = [lead for lead, n in zip(cfg.leads, present) if n == 0]
    if absent:
        log.warning(
            "lead(s) %s of data.leads are in no record under %s: they are zero-filled",
            ", ".join(absent),
            root,
        )
    source.records = kept
    return source


def _fill_nans(signal: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaNs along time, lead by lead; an all-NaN lead becomes zeros."""
    bad = np.isnan(signal)
    if not bad.any():
        return signal
    t = np.arange(signal.shape[1])
    for lead in np.nonzero(bad.any(axis=1))[0]:
        ok = ~bad[lead]
        signal[lead] = np.interp(t, t[ok], signal[lead, ok]) if ok.any() else 0.0
    return signal


class ECGWindowReader:
    """Reads preprocessed windows of any record of a source (picklable for DataLoader workers)."""

    def __init__(self, source: ECGSource, cfg: ECGDataConfig) -> None:
        self.source, self.cfg = source, cfg
        self.maps = [lead_map(r, cfg.leads) for r in source.records]

    def read(
        self, record_index: int, start_seconds: float, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (window (leads, n) float32, lead_mask (leads,) bool) from ``start_seconds``.

        Parts of the window before the record's start or after its end are zeros.
        """
        from scipy.signal import resample_poly

        record, cfg = self.source.records[record_index], self.cfg
        rate, fs = cfg.sample_rate, record.fs
        margin = _MARGIN_SECONDS if fs != rate else 0.0
        first = max(0, int(np.floor((start_seconds - margin) * fs)))
        last = int(np.ceil((start_seconds + n / rate + margin) * fs))
        raw = read_window(record, first, last)
        mapping = self.maps[record_index]
        lead_mask = np.array([c >= 0 for c in mapping])
        picked = np.zeros((len(mapping), raw.shape[1]), dtype=np.float32)
        for lead, channel in enumerate(mapping):
            if channel >= 0:
                picked[lead] = raw[channel]
        picked = _fill_nans(picked)
        if fs != rate and picked.shape[1]:
            ratio = Fraction(rate / fs).limit_denominator(1000)
            picked = resample_poly(picked, ratio.numerator, ratio.denominator, axis=1).astype(
                np.float32
            )
        # Sample k of ``picked`` sits at time first/fs + k/rate; place it in the window.
        offset = int(round((start_seconds - first / fs) * rate))
        window = np.zeros((len(mapping), n), dtype=np.float32)
        src_lo, dst_lo = max(0, offset), max(0, -offset)
        count = max(0, min(picked.shape[1] - src_lo, n - dst_lo))
        window[:, dst_lo : dst_lo + count] = picked[:, src_lo : src_lo + count]
        if count:
            part = window[:, dst_lo : dst_lo + count]
            std = part.std(axis=1, keepdims=True)
            part -= part.mean(axis=1, keepdims=True)
            part /= np.where(std > 1e-6, std, 1.0)
            np.clip(part, -cfg.clip, cfg.clip, out=part)
            part[~lead_mask] = 0.0
        return window, lead_mask


class ECGPretrainDataset(Dataset):
    """Item ``(index, sample_seed, batch_seed)`` -> {"signals": (leads, n), "batch_seed": int}.

    The data is tiled into crop-long segments (a record shorter than a crop is one segment);
    index i picks segment ``i mod segments`` and a crop start drawn from ``sample_seed`` within
    half a crop of it, so every part of every record can be seen and a resumed run sees the
    same crops. An epoch has at least ``min_length`` items so a data set of a few records still
    fills a batch.
    """

    def __init__(self, source: ECGSource, cfg: ECGDataConfig, min_length: int) -> None:
        self.reader = ECGWindowReader(source, cfg)
        self.n = cfg.samples(cfg.crop_seconds)
        self.crop_seconds = self.n / cfg.sample_rate
        # Segment s is (record segment_record[s], start segment_index[s] * crop): two arrays,
        # 12 bytes a segment, not a Python tuple each (10x MIT-BIH has 337,000 segments).
        counts = np.array(
            [max(1, int(r.seconds // self.crop_seconds)) for r in source.records], dtype=np.int64
        )
        self.segment_record = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        self.segment_index = np.arange(counts.sum(), dtype=np.int64) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        self.length = max(len(self.segment_record), min_length)

    def segment(self, index: int) -> tuple[int, float]:
        """Return (record index, segment start in seconds) of item ``index``."""
        s = index % len(self.segment_record)
        return int(self.segment_record[s]), float(self.segment_index[s]) * self.crop_seconds

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: SampleKey) -> dict:
        index, sample_seed, batch_seed = key
        record_index, start = self.segment(index)
        seconds = self.reader.source.records[record_index].seconds
        rng = np.random.default_rng(sample_seed)
        start = start + rng.uniform(-0.5, 0.5) * self.crop_seconds
        start = float(np.clip(start, 0.0, max(0.0, seconds - self.crop_seconds)))
        window, _ = self.reader.read(record_index, start, self.n)
        return {"signals": torch.from_numpy(window), "batch_seed": batch_seed}


class ECGWindowDataset(Dataset):
    """Item i -> (window (leads, n), label): fixed windows with labels, for probes and embeds.

    ``labels`` is (N,) class indices (-1: unlabelled) or (N, K) multi-hot; ``groups`` maps
    each window to the item whose prediction it contributes to (a record's sliding crops share
    a group, and their logits are averaged).
    """

    def __init__(
        self,
        reader: ECGWindowReader,
        windows: list[tuple[int, float]],
        labels: torch.Tensor,
        classes: list[str],
        n: int,
        groups: torch.Tensor | None = None,
    ) -> None:
        self.reader, self.windows, self.n = reader, windows, n
        self.labels, self.classes = labels, classes
        self.groups = groups if groups is not None else torch.arange(len(windows))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | int]:
        record_index, start = self.windows[i]
        window, _ = self.reader.read(record_index, start, self.n)
        label = self.labels[i]
        return torch.from_numpy(window), (label if label.ndim else int(label))


def sliding_starts(seconds: float, crop: float, stride: float) -> list[float]:
    """Return crop start times covering a record of ``seconds`` (at least one crop)."""
    if seconds <= crop:
        return [0.0]
    starts = list(np.arange(0.0, seconds - crop + 1e-9, stride))
    if seconds - crop - starts[-1] > 1e-6:  # the tail gets its own crop
        starts.append(seconds - crop)
    return [float(s) for s in starts]
