"""How many context tokens each side of the peer comparison processes per sample.

lightly's IJEPAMaskCollator (like the reference) truncates every context to the batch's shortest;
jepactl keeps every context patch and pads rows to the batch's longest. Prints, for a few seeded
batches of a ``peer_lightly.py`` configuration, lightly's row length and jepactl's mean kept
and padded lengths. Usage::

    python benchmarks/perf/context_tokens.py --config tiny64 --batches 5

Needs the optional ``lightly`` (``pip install -e .[bench]``); ``--smoke`` runs one batch of
``peer_lightly.py``'s smoke configuration, or says in one line that lightly is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import peer_lightly  # noqa: E402

from jepactl.masks import MultiBlockMask2D, MultiBlockMaskConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(peer_lightly.CONFIGS), default="tiny64")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="one batch of a tiny configuration")
    args = parser.parse_args()
    if importlib.util.find_spec("lightly") is None:
        message = "context_tokens.py needs lightly (pip install -e .[bench])"
        if args.smoke:
            print(f"{message}: smoke run skipped")
            return
        sys.exit(message)
    cfg, scales = peer_lightly.CONFIGS[args.config], peer_lightly.SCALES
    if args.smoke:
        cfg, args.batches = peer_lightly.SMOKE, 1
    from lightly.data import IJEPAMaskCollator

    collator = IJEPAMaskCollator(
        input_size=(cfg["image"], cfg["image"]),
        patch_size=cfg["patch"],
        enc_mask_scale=scales["enc"],
        pred_mask_scale=scales["pred"],
        aspect_ratio=scales["aspect"],
        nenc=1,
        npred=scales["npred"],
        min_keep=scales["min_keep"],
        allow_overlap=False,
    )
    images = peer_lightly.RandomImages(cfg["image"], cfg["batch"] * args.batches)
    sampler = MultiBlockMask2D(
        (cfg["image"] // cfg["patch"],) * 2,
        MultiBlockMaskConfig(
            num_targets=scales["npred"],
            target_scale=scales["pred"],
            target_aspect=scales["aspect"],
            context_scale=scales["enc"],
            min_keep=scales["min_keep"],
        ),
    )
    for b in range(args.batches):
        batch = [images[i] for i in range(b * cfg["batch"], (b + 1) * cfg["batch"])]
        _, masks_enc, _ = collator(batch)
        masks = sampler(cfg["batch"], torch.Generator().manual_seed(b))
        kept = (
            masks.context_valid.sum(1).float().mean().item()
            if masks.context_valid is not None
            else float(masks.context.shape[1])
        )
        print(
            f"batch {b}: lightly {masks_enc[0].shape[1]} per row; jepactl {kept:.1f} kept "
            f"per row on average, padded to {masks.context.shape[1]}"
        )


if __name__ == "__main__":
    main()
