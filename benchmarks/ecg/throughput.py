"""Data-pipeline throughput of an ECG recipe: records/s and crops/s through the reader.

Records/s: whole 10 s records (cinc2021_sample: 12 leads, 500 Hz, .mat) read, lead-selected,
resampled to the recipe's rate and normalised, one after the other. Crops/s: pretraining items
(random crops + preprocessing) of the recipe drawn from a data folder. Single process, one
thread; training samples/s come from the run's metrics.jsonl (see RESULTS.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ecg/throughput.py ecg/cpu \
        ../shared/data/ecg/mitdb ../shared/data/ecg/cinc2021_sample
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from jepactl.domains.ecg.records import ECGPretrainDataset, ECGWindowReader, open_ecg
from jepactl.recipe import load_recipe


def main(recipe_name: str, crops_data: str, records_data: str) -> None:
    recipe = load_recipe(recipe_name, ["data.pretrain_split=all"])
    cfg = recipe.data
    source = open_ecg(records_data, cfg)
    reader = ECGWindowReader(source, cfg)
    start = time.perf_counter()
    for i, record in enumerate(source.records):
        reader.read(i, 0.0, cfg.samples(record.seconds))
    records_per_s = len(source.records) / (time.perf_counter() - start)

    dataset = ECGPretrainDataset(open_ecg(crops_data, cfg), cfg, 0)
    rng = np.random.default_rng(0)
    count = 2000
    start = time.perf_counter()
    for k in range(count):
        dataset[(int(rng.integers(len(dataset))), k, 0)]
    crops_per_s = count / (time.perf_counter() - start)
    print(
        json.dumps(
            {
                "recipe": recipe_name,
                "records_data": records_data,
                "records_per_s": round(records_per_s, 1),
                "crops_data": crops_data,
                "crop_seconds": cfg.crop_seconds,
                "crops_per_s": round(crops_per_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
