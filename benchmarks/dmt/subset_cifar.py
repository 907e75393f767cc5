"""Write a seeded, class-balanced subset of the CIFAR-10 parquet splits (for probes on a CPU).

Feature extraction for the full 30,000 + 10,000 images takes over 20 minutes per encoder on a
shared 2-core CPU, so the reduced-budget comparison probes both arms on the same subset.
Usage: python benchmarks/dmt/subset_cifar.py SRC OUT --train 5000 --test 2000 [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def balanced_rows(table: pa.Table, count: int, seed: int) -> pa.Table:
    """Return ``count`` rows, the same number from each label, drawn with ``seed``."""
    labels = np.asarray(table.column("label"))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[: count // len(classes)] for c in classes
    ]
    return table.take(np.sort(np.concatenate(picked)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.train), ("test", args.test)):
        files = sorted(args.src.glob(f"{split}-*.parquet"))
        table = pa.concat_tables([pq.read_table(f) for f in files])
        pq.write_table(
            balanced_rows(table, count, args.seed), args.out / f"{split}-00000-of-00001.parquet"
        )


if __name__ == "__main__":
    main()
