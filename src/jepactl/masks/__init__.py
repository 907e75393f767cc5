"""Batched mask samplers (one module per layout) and the collate that applies one to a batch.

``multiblock_2d``: I-JEPA context and target blocks on a 2-D token grid. ``multiblock_1d``:
ECG-JEPA's contiguous masked blocks on a 1-D patch sequence. ``feature_subsets``: T-JEPA's
context and target feature subsets of a table row. ``local_windows``: LoMaR / SAR-JEPA local
windows with masked patches. ``collate.MaskingCollate`` draws a sampler's masks for a batch
from its batch seed.
"""

from jepactl.masks.collate import MaskingCollate, MaskSampler
from jepactl.masks.feature_subsets import FeatureMaskConfig, FeatureMasks, FeatureSubsetMask
from jepactl.masks.local_windows import LocalWindowMask, LocalWindowMaskConfig, LocalWindowMasks
from jepactl.masks.multiblock_1d import Masks1D, MultiBlockMask1D, MultiBlockMask1DConfig
from jepactl.masks.multiblock_2d import MultiBlockMask2D, MultiBlockMaskConfig, MultiBlockMasks

__all__ = [
    "FeatureMaskConfig",
    "FeatureMasks",
    "FeatureSubsetMask",
    "LocalWindowMask",
    "LocalWindowMaskConfig",
    "LocalWindowMasks",
    "MaskSampler",
    "MaskingCollate",
    "Masks1D",
    "MultiBlockMask1D",
    "MultiBlockMask1DConfig",
    "MultiBlockMask2D",
    "MultiBlockMaskConfig",
    "MultiBlockMasks",
]
