"""Feature tokenizer for tables (FT-Transformer style, as in T-JEPA): one token per feature.

A numeric feature j with value x becomes ``x * W_j + b_j``; a categorical feature becomes
``E_j[code] + b_j`` (one embedding table per feature, stored as one table with offsets). The
input is the preprocessed feature tensor (B, F) of
:class:`jepactl.domains.tabular.preprocess.TablePreprocessor`: real-valued columns first, then the
categorical codes (stored as floats, exact below 2**24).

The tokenizer config carries the fitted preprocessing statistics next to the shapes, so an
exported encoder's config.json holds everything needed to embed a new file unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from jepactl.errors import RecipeError
from jepactl.nn.pos_embed import sincos_1d


class FeatureTokenizer(nn.Module):
    """Preprocessed table rows (B, F) -> feature tokens (B, F, D)."""

    def __init__(
        self, n_numeric: int, cardinalities: list[int], dim: int, bias: bool = True
    ) -> None:
        super().__init__()
        if n_numeric + len(cardinalities) == 0:
            raise RecipeError("the feature tokenizer needs at least one feature")
        self.n_numeric = n_numeric
        self.num_features = n_numeric + len(cardinalities)
        bound = 1.0 / math.sqrt(dim)  # FT-Transformer's uniform(-1/sqrt(d), 1/sqrt(d)) init
        self.numeric_weight = nn.Parameter(torch.empty(n_numeric, dim).uniform_(-bound, bound))
        self.category_embed = nn.Embedding(max(1, sum(cardinalities)), dim)
        nn.init.uniform_(self.category_embed.weight, -bound, bound)
        offsets = torch.tensor([0] + list(cardinalities[:-1]), dtype=torch.long).cumsum(0)
        self.register_buffer("category_offsets", offsets[: len(cardinalities)], persistent=False)
        self.register_buffer(
            "cardinalities", torch.tensor(cardinalities, dtype=torch.long), persistent=False
        )
        self.feature_bias = (
            nn.Parameter(torch.empty(self.num_features, dim).uniform_(-bound, bound))
            if bias
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real = x[:, : self.n_numeric].unsqueeze(-1) * self.numeric_weight
        # Codes outside the fitted vocabulary cannot occur after preprocessing; clamping keeps
        # a hand-made tensor from indexing another feature's rows.
        codes = x[:, self.n_numeric :].round().long()
        codes = torch.minimum(codes.clamp_min(0), self.cardinalities - 1) + self.category_offsets
        tokens = torch.cat(
            [real.to(self.category_embed.weight.dtype), self.category_embed(codes)], dim=1
        )
        if self.feature_bias is not None:
            tokens = tokens + self.feature_bias
        return tokens

    def position_table(self, dim: int) -> torch.Tensor:
        """Return T-JEPA's fixed 1-D sin-cos position of each feature (F, dim)."""
        return sincos_1d(dim, torch.arange(self.num_features))


def feature_tokenizer(cfg: dict, dim: int, patch_size: int, bias: bool) -> nn.Module:  # noqa: ARG001
    """Build from ``{"kind": "features", "n_numeric": k, "cardinalities": [...], ...}``."""
    return FeatureTokenizer(
        int(cfg["n_numeric"]), [int(c) for c in cfg["cardinalities"]], dim, bias=bias
    )
