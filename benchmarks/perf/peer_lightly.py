"""Side-by-side I-JEPA training throughput: jepactl vs the `lightly` package, same settings.

Both sides train the same configuration (ViT width/depth/heads, patch and image size, batch,
4 target blocks with the same scales, predictor depth and width, dtype) on the same synthetic
images, with the same DataLoader workers. The lightly side is its documented plain-PyTorch
loop (examples/pytorch/ijepa.py): IJEPABackbone + IJEPAPredictor + IJEPAMaskCollator,
SmoothL1 loss, AdamW, per-parameter EMA update. Runs are interleaved A/B/A/B in one process
and the median ratio of samples/s is reported.

lightly's predictor helper hard-codes a 768-wide input, so its predictor is assembled from
torchvision encoder layers of the requested width, exactly as ``from_vit_encoder`` does for
ViT-B. Usage::

    pip install -e .[bench]    # lightly
    python benchmarks/perf/peer_lightly.py --config tiny64 --precision bf16 --json

``--smoke`` runs both sides once on a two-block ViT of width 32 at 64 px (one step, one repeat,
no loader workers; a few seconds, for the tests; its rates mean nothing). Without lightly
installed it prints one line saying so and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

CONFIGS = {
    # name: image, patch, width, depth, heads, predictor width, predictor depth, batch
    "tiny64": dict(
        image=64, patch=4, dim=192, depth=12, heads=3, pred_dim=96, pred_depth=6, batch=32
    ),
    "small224": dict(
        image=224, patch=16, dim=384, depth=12, heads=6, pred_dim=192, pred_depth=6, batch=16
    ),
}
# --smoke: tiny64's 16 x 16 patch grid with a two-block ViT of width 32, for the tests. (On a
# smaller grid lightly's collator can loop for minutes: it redraws every target block until it
# has more than min_keep patches.)
SMOKE = dict(image=64, patch=4, dim=32, depth=2, heads=2, pred_dim=16, pred_depth=2, batch=4)
SCALES = dict(enc=(0.85, 1.0), pred=(0.15, 0.2), aspect=(0.75, 1.5), npred=4, min_keep=10)


class RandomImages(Dataset):
    def __init__(self, size: int, n: int = 10_000) -> None:
        self.size, self.n = size, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        gen = torch.Generator().manual_seed(i)
        return torch.randn(3, self.size, self.size, generator=gen), 0


# ------------------------------------------------------------------------------ lightly side


class LightlyIJEPA(nn.Module):
    """The model of lightly's examples/pytorch/ijepa.py, at an arbitrary width."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        from lightly.models.modules import ijepa
        from torchvision.models.vision_transformer import VisionTransformer

        grid = cfg["image"] // cfg["patch"]
        vit = VisionTransformer(
            image_size=cfg["image"],
            patch_size=cfg["patch"],
            num_layers=cfg["depth"],
            num_heads=cfg["heads"],
            hidden_dim=cfg["dim"],
            mlp_dim=4 * cfg["dim"],
        )
        pred_vit = VisionTransformer(
            image_size=cfg["image"],
            patch_size=cfg["patch"],
            num_layers=cfg["pred_depth"],
            num_heads=cfg["heads"],
            hidden_dim=cfg["pred_dim"],
            mlp_dim=4 * cfg["pred_dim"],
        )
        self.encoder = ijepa.IJEPABackbone.from_vit(vit)
        # What from_vit_encoder does, with the input width set to the encoder's (not 768).
        self.predictor = ijepa.IJEPAPredictor(
            seq_length=1,
            num_layers=1,
            num_heads=1,
            hidden_dim=1,
            predictor_embed_dim=cfg["pred_dim"],
            mlp_dim=cfg["dim"],
            num_patches=grid * grid,
            dropout=0,
            attention_dropout=0,
        )
        self.predictor.layers = pred_vit.encoder.layers
        self.predictor.ln = pred_vit.encoder.ln
        self.target_encoder = copy.deepcopy(self.encoder)

    def forward(self, imgs, masks_enc, masks_pred):
        from lightly.models import utils

        with torch.no_grad():
            h = self.target_encoder(imgs)
            h = F.layer_norm(h, (h.size(-1),))
            h = utils.apply_masks(h, masks_pred)
            h = utils.repeat_interleave_batch(h, len(imgs), repeat=len(masks_enc))
        z = self.predictor(self.encoder(imgs, masks_enc), masks_enc, masks_pred)
        return z, h

    @torch.no_grad()
    def update_target_encoder(self, m: float) -> None:
        for q, k in zip(self.encoder.parameters(), self.target_encoder.parameters()):
            k.data.mul_(m).add_((1.0 - m) * q.detach().data)


def lightly_runner(cfg: dict, precision: str, workers: int):
    from lightly.data import IJEPAMaskCollator

    torch.manual_seed(0)
    model = LightlyIJEPA(cfg)
    collator = IJEPAMaskCollator(
        input_size=(cfg["image"], cfg["image"]),
        patch_size=cfg["patch"],
        enc_mask_scale=SCALES["enc"],
        pred_mask_scale=SCALES["pred"],
        aspect_ratio=SCALES["aspect"],
        nenc=1,
        npred=SCALES["npred"],
        min_keep=SCALES["min_keep"],
        allow_overlap=False,
    )
    loader = DataLoader(
        RandomImages(cfg["image"]),
        batch_size=cfg["batch"],
        shuffle=True,
        collate_fn=collator,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    batches = iter(loader)
    criterion = nn.SmoothL1Loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )

    def step() -> None:
        udata, masks_enc, masks_pred = next(batches)
        with autocast:
            z, h = model(udata[0], masks_enc, masks_pred)
            loss = criterion(z, h)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_target_encoder(0.996)

    return step


# ------------------------------------------------------------------------------ jepactl side


def jepactl_runner(
    cfg: dict,
    precision: str,
    workers: int,
    ragged_context: str,
    shared_context: bool,
    compile_blocks: bool = False,
):
    from accelerate import Accelerator

    from jepactl.data.sampling import BatchPlan
    from jepactl.domains.image import ijepa
    from jepactl.domains.image.ijepa import synthetic_data
    from jepactl.recipe import load_recipe
    from jepactl.step import StepRunner, build_optimizer
    from jepactl.train import build_method

    recipe = load_recipe(
        "image/tiny",
        [
            f"data.image_size={cfg['image']}",
            f"model.patch_size={cfg['patch']}",
            f"model.embed_dim={cfg['dim']}",
            f"model.depth={cfg['depth']}",
            f"model.num_heads={cfg['heads']}",
            f"predictor.embed_dim={cfg['pred_dim']}",
            f"predictor.depth={cfg['pred_depth']}",
            f"predictor.num_heads={cfg['heads']}",
            f"mask.context_scale=[{SCALES['enc'][0]},{SCALES['enc'][1]}]",
            f"mask.target_scale=[{SCALES['pred'][0]},{SCALES['pred'][1]}]",
            f"mask.target_aspect=[{SCALES['aspect'][0]},{SCALES['aspect'][1]}]",
            f"mask.num_targets={SCALES['npred']}",
            f"mask.min_keep={SCALES['min_keep']}",
            f"train.batch_size={cfg['batch']}",
            f"train.precision={precision}",
            f"train.num_workers={workers}",
            f"mask.ragged_context={ragged_context}",
            f"predictor.shared_context={str(shared_context).lower()}",
            f"train.compile={str(compile_blocks).lower()}",
        ],
    )
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    method = build_method(ijepa, recipe)
    optimizer = build_optimizer(method, recipe, accelerator.device)
    model, optimizer = accelerator.prepare(method, optimizer)
    runner = StepRunner(model, model, optimizer, accelerator, recipe)
    model.train()
    dataset, collate = synthetic_data(recipe)
    loader = DataLoader(
        dataset,
        batch_sampler=BatchPlan(len(dataset), cfg["batch"], 0),
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    batches = iter(loader)
    counter = [0]

    def step() -> None:
        runner.run(batches, counter[0], 10_000)
        counter[0] += 1

    return step


def samples_per_s(step, steps: int, batch: int) -> float:
    step()  # one untimed step: the loader's first batch and any lazy init
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny64")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--ragged-context",
        choices=["truncate", "pad"],
        default="truncate",
        help="jepactl's context rows: truncate = the peer's collator (equal work), "
        "pad = jepactl's unbiased default (more tokens)",
    )
    parser.add_argument(
        "--predictor",
        choices=["shared", "reference"],
        default="shared",
        help="jepactl's predictor layout: shared = one sequence per sample for "
        "all target blocks (image/tiny's default), reference = one per block",
    )
    parser.add_argument(
        "--compile",
        choices=["on", "off"],
        default="off",
        help="jepactl's train.compile (its transformer blocks compiled)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny ViT, one step, one repeat: checks the script runs",
    )
    args = parser.parse_args()
    if importlib.util.find_spec("lightly") is None:
        message = "peer_lightly.py needs lightly (pip install -e .[bench])"
        if args.smoke:
            print(f"{message}: smoke run skipped")
            return
        sys.exit(message)
    cfg = CONFIGS[args.config]
    if args.smoke:
        cfg, args.config, args.steps, args.repeats, args.workers = SMOKE, "smoke", 1, 1, 0
    runners = {
        "jepactl": jepactl_runner(
            cfg,
            args.precision,
            args.workers,
            args.ragged_context,
            args.predictor == "shared",
            args.compile == "on",
        ),
        "lightly": lightly_runner(cfg, args.precision, args.workers),
    }
    for run in runners.values():  # warm up both before timing either
        run()
        run()
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):  # interleaved A/B/A/B
        for name, run in runners.items():
            rates[name].append(samples_per_s(run, args.steps, cfg["batch"]))
    ratios = [a / b for a, b in zip(rates["jepactl"], rates["lightly"])]
    result = {
        "config": args.config,
        **cfg,
        "precision": args.precision,
        "ragged_context": args.ragged_context,
        "predictor": args.predictor,
        "compile": args.compile,
        "workers": args.workers,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "jepactl_samples_per_s": [round(r, 2) for r in rates["jepactl"]],
        "lightly_samples_per_s": [round(r, 2) for r in rates["lightly"]],
        "median_ratio": statistics.median(ratios),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
