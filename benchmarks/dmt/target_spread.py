"""Print how much DMT-JEPA's (or I-JEPA's) targets vary across patches and images.

A collapse check.

For 32 training images (fixed sample keys) of a dmt-jepa run's last checkpoint: the per-channel
standard deviation of the LayerNorm-ed target-encoder tokens and of the aggregated targets
(the EMA head's output), across the patches of one image (averaged over images), across the
images' mean tokens, and over all tokens. Targets that barely vary are easy to predict: the
smooth-L1 loss then falls towards zero without the encoder having to learn much.
Usage: python benchmarks/dmt/target_spread.py RUN [RUN ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from jepactl.domains.image import dmt_jepa
from jepactl.nn.vit import layer_norm_targets
from jepactl.runs import load_trained_method


def spread(tokens: torch.Tensor) -> tuple[float, float, float]:
    """Return (std across patches, std across image means, std over all tokens), channel-mean."""
    return (
        tokens.std(dim=1).mean().item(),
        tokens.mean(dim=1).std(dim=0).mean().item(),
        tokens.reshape(-1, tokens.shape[-1]).std(dim=0).mean().item(),
    )


def main(runs: list[str]) -> None:
    print("| run | step | tokens | across patches | across images | all tokens |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        recipe, method, step = load_trained_method(Path(run))
        dataset, collate, _ = dmt_jepa.pretrain_data(recipe, recipe.data.path)
        batch = collate([dataset[(i, i, 3)] for i in range(32)])
        with torch.no_grad():
            tokens = layer_norm_targets(method.target_encoder(batch["images"]))
            rows = [("encoder (LayerNorm-ed)", tokens)]
            if hasattr(method, "target_head"):  # an ijepa run has only the encoder's targets
                rows.append(("aggregated targets", method.target_head.aggregate_neighbours(tokens)))
        for name, values in rows:
            a, b, c = spread(values)
            print(f"| {run} | {step} | {name} | {a:.4f} | {b:.4f} | {c:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
