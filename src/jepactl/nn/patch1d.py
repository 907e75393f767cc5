"""1-D patch tokenizer for multi-lead signals (ECG-JEPA): every token spans all leads.

A Conv1d with kernel = stride = ``patch_size`` turns (B, leads, samples) into (B, samples /
patch_size, D); at 500 Hz and patch 25 a token covers 50 ms of all 12 leads (Weimann & Conrad,
kweimann/ECG-JEPA models/modules.py). Positions are fixed 1-D sin-cos. The tokenizer config
holds the signal length, so an encoder for a different crop length is the same weights with a
different ``signal_length`` (see ``jepactl.domains.ecg.encoder.encoder_for_length``).
"""

from __future__ import annotations

import torch
from torch import nn

from jepactl.errors import RecipeError
from jepactl.nn.pos_embed import sincos_1d


class PatchEmbed1D(nn.Module):
    """Non-overlapping patches of a (B, leads, samples) signal -> (B, samples / p, D)."""

    def __init__(
        self, leads: int, signal_length: int, patch_size: int, dim: int, bias: bool = True
    ) -> None:
        super().__init__()
        if signal_length % patch_size:
            raise RecipeError(
                f"signal length {signal_length} samples is not divisible by "
                f"model.patch_size={patch_size}"
            )
        self.num_patches = signal_length // patch_size
        self.proj = nn.Conv1d(leads, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        # Initialised like a linear layer, as the transformer's other projections.
        nn.init.trunc_normal_(self.proj.weight.view(dim, -1), std=0.02)
        if bias:
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous(): see PatchEmbed2D.forward (a transposed residual stream costs a copy per
        # LayerNorm in an encoder that sees every token).
        return self.proj(x).transpose(1, 2).contiguous()

    def position_table(self, dim: int) -> torch.Tensor:
        return sincos_1d(dim, torch.arange(self.num_patches))


def build_patch1d(cfg: dict, dim: int, patch_size: int, bias: bool) -> nn.Module:
    """Tokenizer factory for ``{"kind": "patch1d", "leads": L, "signal_length": S}``."""
    return PatchEmbed1D(int(cfg["leads"]), int(cfg["signal_length"]), patch_size, dim, bias=bias)
