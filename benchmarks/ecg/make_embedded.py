"""Write the embedded MIT-BIH excerpt shipped in src/jepactl/domains/ecg/embedded/mitdb/.

The first five minutes of ten MIT-BIH Arrhythmia Database records (ODC-By 1.0; Moody & Mark
2001, PhysioNet), signal and beat annotations, unchanged samples in their original format 212.
Six records are from the inter-patient DS1 (training) list and four from DS2 (test), chosen
because their first five minutes hold S, V and F beats, so the embedded default can be both
pretrained on and probed with the standard split.

    .venv/bin/python benchmarks/ecg/make_embedded.py ../shared/data/ecg/mitdb
"""

from __future__ import annotations

import sys
from pathlib import Path

import wfdb

RECORDS = ["118", "119", "124", "208", "209", "223", "200", "213", "232", "233"]
MINUTES = 5


def main(mitdb: str) -> None:
    out = (
        Path(__file__).resolve().parents[2]
        / "src"
        / "jepactl"
        / "domains"
        / "ecg"
        / "embedded"
        / "mitdb"
    )
    out.mkdir(parents=True, exist_ok=True)
    for name in RECORDS:
        src = str(Path(mitdb) / name)
        stop = int(360 * 60 * MINUTES)
        rec = wfdb.rdrecord(src, sampto=stop, physical=False)
        wfdb.wrsamp(
            name,
            fs=rec.fs,
            units=rec.units,
            sig_name=rec.sig_name,
            d_signal=rec.d_signal,
            fmt=rec.fmt,
            adc_gain=rec.adc_gain,
            baseline=rec.baseline,
            comments=rec.comments,
            write_dir=str(out),
        )
        ann = wfdb.rdann(src, "atr", sampto=stop - 1)
        wfdb.wrann(
            name,
            "atr",
            ann.sample,
            ann.symbol,
            subtype=ann.subtype,
            chan=ann.chan,
            num=ann.num,
            aux_note=ann.aux_note,
            fs=rec.fs,
            write_dir=str(out),
        )
    print(f"wrote {len(RECORDS)} records to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ecg/mitdb")
