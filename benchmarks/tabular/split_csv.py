"""Write a seeded train/test split of a CSV: ``split_csv.py FILE OUT_DIR TEST_FRACTION SEED``."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

source, out, fraction, seed = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
frame = pd.read_csv(source, dtype=str, keep_default_na=False)
order = np.random.default_rng(seed).permutation(len(frame))
cut = int(round(len(frame) * (1 - fraction)))
out.mkdir(parents=True, exist_ok=True)
frame.iloc[order[:cut]].to_csv(out / "train.csv", index=False)
frame.iloc[order[cut:]].to_csv(out / "test.csv", index=False)
print(f"{source}: {cut} train / {len(frame) - cut} test rows (seed {seed}) -> {out}")
