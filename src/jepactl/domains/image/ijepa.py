"""I-JEPA: predict the EMA target encoder's tokens of masked blocks from a visible context.

Reference: Assran et al. 2023, facebookresearch/ijepa (methods.md §0). The context encoder
sees only the context tokens; the target encoder sees the full image without gradients; the
predictor fills each target block from the context; the loss compares predictions with the
LayerNorm-ed targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jepactl.data.images import open_images
from jepactl.data.synthetic import SyntheticImages
from jepactl.domains.image.dataset import (
    ImageAugmentDataset,
    ImageDataConfig,
    ImageEvalDataset,
    ImagePretrainDataset,
)
from jepactl.errors import UserError
from jepactl.masks import MaskingCollate, MultiBlockMask2D, MultiBlockMaskConfig
from jepactl.methods.base import (
    ContextTargetPredictor,
    MethodSpec,
    PredictorConfig,
    PretrainData,
)
from jepactl.nn.vit import EncoderConfig
from jepactl.recipe import Recipe


@dataclass
class IJEPARecipe(Recipe):
    domain: str = "image"
    method: str = "ijepa"
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    mask: MultiBlockMaskConfig = field(default_factory=MultiBlockMaskConfig)


def tokenizer_config(recipe: IJEPARecipe) -> dict:
    return {"kind": "patch2d", "in_chans": recipe.data.channels, "img_size": recipe.data.image_size}


class IJEPA(ContextTargetPredictor):
    def __init__(self, recipe: IJEPARecipe) -> None:
        super().__init__(
            tokenizer_config(recipe),
            recipe.model,
            recipe.predictor,
            inputs="images",
            loss=recipe.loss,
        )


def build(recipe: IJEPARecipe) -> IJEPA:
    return IJEPA(recipe)


def masking_collate(recipe: IJEPARecipe) -> MaskingCollate:
    """Return the collate that stacks images and draws multi-block masks on the patch grid."""
    grid = (recipe.data.image_size // recipe.model.patch_size,) * 2
    return MaskingCollate("images", MultiBlockMask2D(grid, recipe.mask))


def pretrain_data(recipe: IJEPARecipe, path: str):
    """Return (dataset indexed by SampleKey, collate function, source) for pretraining."""
    if path is None:
        raise UserError("no data: pass --data PATH (or set data.path in the recipe)")
    source = open_images(path, None, recipe.data.image_column, recipe.data.label_column)
    return PretrainData(ImagePretrainDataset(source, recipe.data), masking_collate(recipe), source)


def synthetic_data(recipe: IJEPARecipe):
    """Return (random images of the recipe's shape, collate) for ``jepactl bench``."""
    dataset = SyntheticImages(recipe.data.channels, recipe.data.image_size)
    return dataset, masking_collate(recipe)


def eval_data(
    recipe: IJEPARecipe,
    path: str,
    split: str | None,
    augment: bool = False,
    seed: int = 0,
    labels: str | None = None,
):
    """Return a labelled dataset ``i -> (tensor, label)`` with ``.labels`` and ``.classes``.

    ``labels``: a ``file,label`` CSV replacing the data's own labels (``jepactl probe --labels``).
    """
    source = open_images(path, split, recipe.data.image_column, recipe.data.label_column)
    if labels is not None:
        from jepactl.data.images import with_label_file

        source = with_label_file(source, labels, path)
    if augment:
        return ImageAugmentDataset(source, recipe.data, seed)
    return ImageEvalDataset(source, recipe.data)


def has_split(recipe: IJEPARecipe, path: str, split: str) -> bool:
    from jepactl.data.images import has_split as _has_split

    return _has_split(path, split)


SPEC = MethodSpec(
    "ijepa",
    IJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    label_file="file,label",
)
