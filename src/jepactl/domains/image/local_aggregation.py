"""DMT-JEPA's local aggregation head: discriminative targets from semantic neighbours.

Reference: Mo & Yun, "DMT-JEPA: Discriminative Masked Targets" (arXiv 2405.17995),
DMTJEPA/DMTJEPA src/models/local_agg_head.py (methods.md §1).

* **Target branch** (:meth:`LocalAggregationHead.aggregate_neighbours`, EMA copy of the head on
  the LayerNorm-ed target encoder output): each patch scores its ``window`` x ``window``
  neighbours (itself excluded) by cosine similarity and keeps the top ``neighbours``; two
  CaiT-style class-attention blocks then read those neighbours with the image's mean token as the
  query; a final LayerNorm gives the patch's target. The centre patch is not a key: it only
  chooses the neighbours. Selection is batched (one gather, one ``topk``).
* **Context branch** (:meth:`LocalAggregationHead.refine_context`, the trainable head on the
  context encoder output): the same blocks with the mean of the context tokens as the query over
  ``[mean; context tokens]``; the block's single output token is added to every context token,
  then each token goes through the MLP; block 2 recomputes the mean.

Fix of the reference: it builds the per-patch queries with ``cls.repeat(N, 1, 1)``, which tiles
the batch in the wrong order against ``x.view(B*N, ...)``, so for B > 1 patch (b, n) is queried
with the mean token of image (b*N + n) % B. Here the query is image b's own mean
(``repeat_interleave``). Padded context rows (jepactl keeps ragged context masks whole) are
excluded from the mean and from the keys. The neighbour table wraps around the grid edges as
in the reference (``wrap: false`` drops out-of-grid neighbours instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from jepactl.nn.attention import scaled_dot_product_attention
from jepactl.nn.vit import gather_tokens


@dataclass
class LocalAggregationConfig:
    neighbours: int = 4  # patch_k_num: top-k neighbours kept per patch
    window: int = 3  # patch_k_size: candidates are the window x window patches minus the centre
    depth: int = 2  # class-attention blocks
    wrap: bool = True  # reference: neighbour windows wrap around the grid edges


def neighbour_table(
    grid: tuple[int, int], window: int, wrap: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (indices (N, window**2 - 1), valid (N, window**2 - 1)) of each patch's neighbours.

    Neighbours come in raster order of the window, the centre left out. With ``wrap`` every
    entry is valid (coordinates taken modulo the grid); without it, entries outside the grid are
    invalid and point at the patch itself.
    """
    height, width = grid
    half = window // 2
    offsets = [
        (dr, dc)
        for dr in range(-half, half + 1)
        for dc in range(-half, half + 1)
        if (dr, dc) != (0, 0)
    ]
    rows = torch.arange(height).repeat_interleave(width)[:, None]
    cols = torch.arange(width).repeat(height)[:, None]
    d_rows = torch.tensor([o[0] for o in offsets])[None, :]
    d_cols = torch.tensor([o[1] for o in offsets])[None, :]
    r, c = rows + d_rows, cols + d_cols
    if wrap:
        return (r % height) * width + (c % width), torch.ones(r.shape, dtype=torch.bool)
    valid = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    own = rows * width + cols
    return torch.where(valid, r * width + c, own.expand_as(r)), valid


def select_neighbours(
    features: torch.Tensor, table: torch.Tensor, valid: torch.Tensor, k: int
) -> torch.Tensor:
    """Return (B, N, k) token indices: each patch's k candidates most cosine-similar to it."""
    normed = F.normalize(features.float(), dim=-1)
    candidates = normed[:, table]  # (B, N, C, D)
    scores = (candidates * normed[:, :, None, :]).sum(dim=-1)  # (B, N, C)
    scores = scores.masked_fill(~valid, float("-inf"))
    best = scores.topk(k, dim=-1).indices  # positions within the candidate list
    return table.expand(features.shape[0], -1, -1).gather(2, best)


class ClassAttentionBlock(nn.Module):
    """CaiT's LayerScale_Block_CA without layer scale: one query token attends to [query; keys]."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, norm_eps: float
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"head width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def attend(
        self, query: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        """Return (S, 1, D): the query's attention over [query; keys] (S, 1+L, D)."""
        u = self.norm1(torch.cat([query, keys], dim=1))
        s, length, dim = u.shape
        heads, width = self.num_heads, dim // self.num_heads
        q = self.q(u[:, :1]).reshape(s, 1, heads, width).transpose(1, 2)
        k = self.k(u).reshape(s, length, heads, width).transpose(1, 2)
        v = self.v(u).reshape(s, length, heads, width).transpose(1, 2)
        mask = None
        if valid is not None:
            mask = torch.cat([valid.new_ones(s, 1), valid], dim=1)[:, None, None, :]
        out = scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(s, 1, dim))

    def forward_query(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Target branch: return the updated query token (S, 1, D)."""
        x = query + self.attend(query, keys, None)
        return x + self.mlp(self.norm2(x))

    def forward_broadcast(
        self, tokens: torch.Tensor, query: torch.Tensor, valid: torch.Tensor | None
    ) -> torch.Tensor:
        """Context branch: return every token plus the query's attention output, then MLP."""
        x = tokens + self.attend(query, tokens, valid)
        return x + self.mlp(self.norm2(x))


def masked_mean(tokens: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Return the (B, 1, D) mean over valid tokens (all when ``valid`` is None)."""
    if valid is None:
        return tokens.mean(dim=1, keepdim=True)
    weight = valid.to(tokens.dtype)[..., None]
    return (tokens * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True)


class LocalAggregationHead(nn.Module):
    """Class-attention head shared by DMT-JEPA's target (neighbours) and context branches."""

    def __init__(
        self,
        grid: tuple[int, int],
        dim: int,
        num_heads: int,
        config: LocalAggregationConfig,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        candidates = config.window**2 - 1
        if config.window < 3 or config.window % 2 == 0:
            raise ValueError(f"aggregation.window must be an odd number >= 3, got {config.window}")
        if not 1 <= config.neighbours <= candidates:
            raise ValueError(
                f"aggregation.neighbours must be in 1..{candidates}, got {config.neighbours}"
            )
        self.config = config
        self.blocks = nn.ModuleList(
            ClassAttentionBlock(dim, num_heads, mlp_ratio, qkv_bias, norm_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        table, valid = neighbour_table(grid, config.window, config.wrap)
        self.register_buffer("neighbour_index", table, persistent=False)
        self.register_buffer("neighbour_valid", valid, persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def aggregate_neighbours(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return one aggregated target per patch (B, N, D) from all N patch tokens (B, N, D)."""
        batch, count, dim = tokens.shape
        if count != self.neighbour_index.shape[0]:
            raise ValueError(f"head built for {self.neighbour_index.shape[0]} patches, got {count}")
        chosen = select_neighbours(
            tokens, self.neighbour_index, self.neighbour_valid, self.config.neighbours
        )
        keys = gather_tokens(tokens, chosen).reshape(batch * count, -1, dim)
        # Per-image query: patch (b, n) reads image b's mean token (the reference mixes images).
        query = tokens.mean(dim=1, keepdim=True).repeat_interleave(count, dim=0)
        for block in self.blocks:
            query = block.forward_query(query, keys)
        return self.norm(query).reshape(batch, count, dim)

    def refine_context(
        self, tokens: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return context tokens (B, K, D) refined by the global class-attention blocks."""
        x = tokens
        for block in self.blocks:
            x = block.forward_broadcast(x, masked_mean(x, valid), valid)
        return self.norm(x)
