"""ECG-JEPA: predict the EMA encoder's tokens of masked stretches of a multi-lead ECG.

Reference: Weimann & Conrad, arXiv 2410.13867, kweimann/ECG-JEPA (methods.md §4). Conv1d
patches span all leads (kernel = stride = 25 at 500 Hz), fixed 1-D sin-cos positions, one
register token, no bias terms anywhere. A batch keeps 15-25% of the patches; the rest are
masked in contiguous blocks of >= 10 patches (``masks/multiblock_1d.py``). The context encoder sees
the kept patches only; the target encoder sees the whole crop; the predictor fills every
masked patch and the loss is the mean L1 distance to the target tokens (the encoder ends in
LayerNorm, so targets get no extra normalisation). The shared trainer runs AdamW (0.9, 0.99),
linear warmup + cosine lr, cosine weight decay 0.01 -> 0.1 on Linear/Conv1d weights only, and
EMA 0.998 -> 0.9995. One difference: the reference updates the EMA at the start of the next
forward pass, the trainer right after the optimizer step; the sequence of weights is the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from jepactl.domains.ecg.heads import ECGProbeConfig
from jepactl.domains.ecg.records import ECGDataConfig, ECGPretrainDataset, open_ecg
from jepactl.errors import DataError, RecipeError
from jepactl.masks import MaskingCollate, MultiBlockMask1D, MultiBlockMask1DConfig
from jepactl.methods.base import (
    ContextTargetPredictor,
    MethodSpec,
    PredictorConfig,
    PretrainData,
)
from jepactl.nn.vit import EncoderConfig
from jepactl.recipe import EmaConfig, LossConfig, OptimConfig, Recipe, TrainConfig


@dataclass
class ECGPredictorConfig(PredictorConfig):
    embed_dim: int = 96
    depth: int = 8
    num_heads: int = 4


def _vit_xs() -> EncoderConfig:
    return EncoderConfig(
        embed_dim=192,
        depth=8,
        num_heads=4,
        mlp_ratio=4.0,
        patch_size=25,
        qkv_bias=False,
        bias=False,
        num_registers=1,
        norm_eps=1e-6,
    )


@dataclass
class ECGJEPARecipe(Recipe):
    """Defaults: the paper's ViT-XS pretraining (configs/pretrain/*.yaml of kweimann/ECG-JEPA)."""

    domain: str = "ecg"
    method: str = "ecg-jepa"
    data: ECGDataConfig = field(default_factory=ECGDataConfig)
    model: EncoderConfig = field(default_factory=_vit_xs)
    predictor: ECGPredictorConfig = field(default_factory=ECGPredictorConfig)
    mask: MultiBlockMask1DConfig = field(default_factory=MultiBlockMask1DConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1e-3,
            start_lr=0.0,
            final_lr=1e-6,
            warmup_steps=10_000,
            weight_decay=0.01,
            final_weight_decay=0.1,
            betas=(0.9, 0.99),
            eps=1e-6,
            grad_clip=0.0,
        )
    )
    ema: EmaConfig = field(default_factory=lambda: EmaConfig(start=0.998, end=0.9995))
    loss: LossConfig = field(default_factory=lambda: LossConfig(kind="l1", target_norm="none"))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            batch_size=2048, max_steps=100_000, precision="bf16", checkpoint_every=1000
        )
    )
    probe: ECGProbeConfig = field(default_factory=ECGProbeConfig)


def tokenizer_config(recipe: ECGJEPARecipe, signal_length: int | None = None) -> dict:
    """Return the patch1d tokenizer config for crops of ``signal_length`` samples."""
    length = signal_length or recipe.data.samples(recipe.data.crop_seconds)
    return {"kind": "patch1d", "leads": len(recipe.data.leads), "signal_length": length}


class ECGJEPA(ContextTargetPredictor):
    def __init__(self, recipe: ECGJEPARecipe) -> None:
        super().__init__(
            tokenizer_config(recipe),
            recipe.model,
            recipe.predictor,
            inputs="signals",
            loss=recipe.loss,
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().forward(batch)  # one target set: targets (B, 1, N - K)
        kept, masked = batch["context"].shape[1], batch["targets"].shape[-1]
        out["keep_ratio"] = torch.tensor(kept / (kept + masked))
        return out


def build(recipe: ECGJEPARecipe) -> ECGJEPA:
    return ECGJEPA(recipe)


def masking_collate(recipe: ECGJEPARecipe) -> MaskingCollate:
    """Return the collate that stacks crops and draws 1-D block masks over their patches."""
    patches = tokenizer_config(recipe)["signal_length"] // recipe.model.patch_size
    return MaskingCollate("signals", MultiBlockMask1D(patches, recipe.mask))


def pretrain_data(recipe: ECGJEPARecipe, path: str | None):
    """Return (crop dataset indexed by SampleKey, masking collate, source); None: embedded data."""
    source = open_ecg(path, recipe.data)
    if recipe.data.pretrain_split not in ("all", "train"):
        raise RecipeError(
            f"data.pretrain_split must be all or train, got '{recipe.data.pretrain_split}'"
        )
    if recipe.data.pretrain_split == "train":
        from jepactl.domains.ecg.windows import records_in_split

        chosen = records_in_split(source, recipe.data, "train")
        if not chosen:
            raise DataError(
                f"no record of the training split under '{source.root}' "
                "(data.pretrain_split=train; see data.train_records)"
            )
        source.records = [source.records[i] for i in chosen]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    min_length = recipe.data.min_epoch_samples or recipe.train.batch_size * world
    dataset = ECGPretrainDataset(source, recipe.data, min_length)
    return PretrainData(dataset, masking_collate(recipe), source)


def eval_data(
    recipe: ECGJEPARecipe,
    path: str | None,
    split: str | None,
    augment: bool = False,
    seed: int = 0,
    labels: str | None = None,
):
    """Return labelled crop-long windows (beats centred, or each record's sliding crops).

    Windows have the pretraining crop length, so ``build(recipe)``'s encoders take them as
    they are; ``augment`` is accepted for the contract and ignored (no ECG augmentation).
    ``labels``: a ``record,label`` CSV, read as ``data.labels=csv data.label_csv=FILE``.
    """
    from jepactl.domains.ecg.windows import labelled_windows, with_label_csv

    recipe = with_label_csv(recipe, labels)
    source = open_ecg(path, recipe.data)
    crop = recipe.data.crop_seconds
    return labelled_windows(source, recipe.data, split, crop, crop)


def has_split(recipe: ECGJEPARecipe, path: str | None, split: str) -> bool:
    from jepactl.domains.ecg.windows import split_exists

    return split_exists(open_ecg(path, recipe.data), recipe.data, split)


def run_probe(request, recipe: ECGJEPARecipe) -> dict:
    """Return the ECG probe report (linear / attentive / fine-tune heads, ECG metrics)."""
    from jepactl.domains.ecg.probe import run_probe as ecg_probe

    return ecg_probe(request, recipe)


def synthetic_data(recipe: ECGJEPARecipe):
    """Return (N(0,1) crops of the recipe's leads and length, collate) for ``jepactl bench``."""
    from jepactl.data.synthetic import SyntheticTensors

    length = tokenizer_config(recipe)["signal_length"]
    dataset = SyntheticTensors("signals", (len(recipe.data.leads), length))
    return dataset, masking_collate(recipe)


SPEC = MethodSpec(
    "ecg-jepa",
    ECGJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    run_probe=run_probe,
    label_file="record,label",
)
