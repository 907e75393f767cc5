"""Linear probe of a seq-JEPA run's view encoder on clean (untransformed) images.

``jepactl probe`` classifies the aggregate of transformed views; this script gives the number
comparable with the generic image probe (I-JEPA): the online encoder's embedding of the plain
centre-resized image, the same logistic regression. Usage:

    python benchmarks/seq/clean_views.py RUN DATA [--random-init]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from jepactl.domains.views.sequences import normalise
from jepactl.evaluate.metrics import accuracy
from jepactl.evaluate.probe import linear_probe
from jepactl.evaluate.source import labelled_splits, open_method
from jepactl.runs import read_run_recipe


@torch.no_grad()
def embed(encoder, dataset, data_config, batch_size: int = 256):
    feats, labels = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        images = normalise(torch.stack([x for x, _ in items]), data_config)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats.append(encoder(images).float())
        labels.append(torch.tensor([y for _, y in items]))
    return torch.cat(feats), torch.cat(labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("data")
    parser.add_argument("--random-init", action="store_true")
    args = parser.parse_args()
    recipe = read_run_recipe(args.run)
    method, tag = open_method(args.run, recipe, args.random_init, "this script")
    encoder = method.encoder("context").eval()
    train, test, _ = labelled_splits(recipe, args.data, None, 0.2, 0)
    x, y = embed(encoder, train, recipe.data)
    tx, ty = embed(encoder, test, recipe.data)
    predicted, _ = linear_probe(x, y, tx, ty, len(train.classes), 0)
    print(json.dumps({"run": str(args.run), "encoder": tag, "clean_top1": accuracy(predicted, ty)}))


if __name__ == "__main__":
    main()
