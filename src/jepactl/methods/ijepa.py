"""I-JEPA: predict the EMA target encoder's tokens of masked blocks from a visible context.

Reference: Assran et al. 2023, facebookresearch/ijepa (methods.md §0). The context encoder
sees only the context tokens; the target encoder sees the full image without gradients; the
predictor fills each target block from the context; the loss compares predictions with the
LayerNorm-ed targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from jepactl.data.image_dataset import (ImageAugmentDataset, ImageDataConfig, ImageEvalDataset,
                                        ImagePretrainDataset)
from jepactl.data.images import open_images
from jepactl.data.synthetic import SyntheticImages
from jepactl.errors import UserError
from jepactl.masks import MultiBlockMask2D, MultiBlockMaskConfig
from jepactl.methods.base import ContextTargetPredictor
from jepactl.methods.losses import regression_loss
from jepactl.nn.vit import EncoderConfig, gather_tokens, layer_norm_targets
from jepactl.recipe import LossConfig, Recipe


@dataclass
class PredictorConfig:
    embed_dim: int = 384
    depth: int = 6
    num_heads: int = 12
    # False: one predictor sequence per target block, as the reference. True: all blocks of a
    # sample in one sequence (nn/predictor.py says exactly how that differs).
    shared_context: bool = False


@dataclass
class IJEPARecipe(Recipe):
    domain: str = "image"
    method: str = "ijepa"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    mask: MultiBlockMaskConfig = field(default_factory=MultiBlockMaskConfig)


RECIPE = IJEPARecipe


def tokenizer_config(recipe: IJEPARecipe) -> dict:
    return {"kind": "patch2d", "in_chans": recipe.data.channels,
            "img_size": recipe.data.image_size}


class IJEPA(ContextTargetPredictor):
    def __init__(self, recipe: IJEPARecipe) -> None:
        pred = recipe.predictor
        super().__init__(tokenizer_config(recipe), recipe.model, pred.embed_dim, pred.depth,
                         pred.num_heads, shared_context=pred.shared_context)
        self.loss_config: LossConfig = recipe.loss

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, targets = batch["images"], batch["targets"]
        with torch.no_grad():
            self.target_encoder.eval()
            full = self.target_encoder(images)
            if self.loss_config.target_norm == "layer_norm":
                full = layer_norm_targets(full)
            wanted = gather_tokens(full, targets)  # (B, M, T, D)
        context = self.context_encoder(images, batch["context"], batch.get("context_valid"))
        predicted = self.predictor(context, batch["context"], batch.get("context_valid"), targets)
        loss = regression_loss(predicted.float(), wanted.float(), self.loss_config.kind)
        return {"loss": loss, "embeddings": full.mean(dim=1).detach()}


def build(recipe: IJEPARecipe) -> IJEPA:
    return IJEPA(recipe)


class MaskingCollate:
    """Stack images and sample the batch's masks from the batch seed (picklable for workers)."""

    def __init__(self, grid: tuple[int, int], config: MultiBlockMaskConfig) -> None:
        self.sampler = MultiBlockMask2D(grid, config)

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(samples[0]["batch_seed"])
        masks = self.sampler(len(samples), gen)
        batch = {"images": torch.stack([s["images"] for s in samples]),
                 "context": masks.context, "targets": masks.targets}
        if masks.context_valid is not None:
            batch["context_valid"] = masks.context_valid
        return batch


def pretrain_data(recipe: IJEPARecipe, path: str):
    """Return (dataset indexed by SampleKey, collate function, source) for pretraining."""
    if path is None:
        raise UserError("no data: pass --data PATH (or set data.path in the recipe)")
    source = open_images(path, None, recipe.data.image_column, recipe.data.label_column)
    grid = (recipe.data.image_size // recipe.model.patch_size,) * 2
    return ImagePretrainDataset(source, recipe.data), MaskingCollate(grid, recipe.mask), source


def synthetic_data(recipe: IJEPARecipe):
    """Return (random images of the recipe's shape, collate) for ``jepactl bench``."""
    grid = (recipe.data.image_size // recipe.model.patch_size,) * 2
    dataset = SyntheticImages(recipe.data.channels, recipe.data.image_size)
    return dataset, MaskingCollate(grid, recipe.mask)


def eval_data(recipe: IJEPARecipe, path: str, split: str | None, augment: bool = False,
              seed: int = 0):
    """Return a labelled dataset ``i -> (tensor, label)`` with ``.labels`` and ``.classes``."""
    source = open_images(path, split, recipe.data.image_column, recipe.data.label_column)
    if augment:
        return ImageAugmentDataset(source, recipe.data, seed)
    return ImageEvalDataset(source, recipe.data)


def has_split(recipe: IJEPARecipe, path: str, split: str) -> bool:
    from jepactl.data.images import has_split as _has_split

    return _has_split(path, split)
