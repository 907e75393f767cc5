"""Tokenizers: one sample in, N tokens out, plus the fixed position table for those N tokens.

A tokenizer is described by a small dict (``{"kind": "patch2d", ...}``) that is written into
``config.json`` on export, so ``jepactl.load_encoder`` rebuilds it without the recipe.
Domains add their own kinds (1-D ECG patches, tabular features) to ``TOKENIZERS``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from jepactl.errors import RecipeError
from jepactl.nn.feature_tokenizer import feature_tokenizer
from jepactl.nn.patch1d import build_patch1d
from jepactl.nn.pos_embed import sincos_2d


class PatchEmbed2D(nn.Module):
    """Non-overlapping p x p patches of a (B, C, H, W) image -> (B, H/p * W/p, D), raster order."""

    def __init__(
        self, in_chans: int, img_size: tuple[int, int], patch_size: int, dim: int, bias: bool = True
    ) -> None:
        super().__init__()
        h, w = img_size
        if h % patch_size or w % patch_size:
            raise RecipeError(
                f"image size {h}x{w} is not divisible by model.patch_size={patch_size}"
            )
        self.grid = (h // patch_size, w // patch_size)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        # I-JEPA initialises the patch projection like a linear layer.
        nn.init.trunc_normal_(self.proj.weight.view(dim, -1), std=0.02)
        if bias:
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous(): the transposed view would carry channel-stride-N layout through every
        # residual add of an ungathered (target) encoder, and each LayerNorm would copy it
        # (benchmarks/perf/target_forward.py --compare layout: forward + backward 6 % faster).
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()

    def position_table(self, dim: int) -> torch.Tensor:
        return sincos_2d(dim, *self.grid)


def _patch2d(cfg: dict, dim: int, patch_size: int, bias: bool) -> nn.Module:
    size = cfg["img_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    return PatchEmbed2D(int(cfg["in_chans"]), size, patch_size, dim, bias=bias)


TOKENIZERS: dict[str, Callable[[dict, int, int, bool], nn.Module]] = {"patch2d": _patch2d}
TOKENIZERS["patch1d"] = build_patch1d  # multi-lead 1-D patches (ECG-JEPA)
TOKENIZERS["features"] = feature_tokenizer  # tabular feature tokens (T-JEPA)


def build_tokenizer(cfg: dict, dim: int, patch_size: int, bias: bool = True) -> nn.Module:
    kind = cfg.get("kind")
    if kind not in TOKENIZERS:
        raise RecipeError(f"unknown tokenizer kind {kind!r}; known: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind](cfg, dim, patch_size, bias)
