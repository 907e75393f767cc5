"""The narrow JEPA predictor: context tokens + mask tokens at target positions -> predictions."""

from __future__ import annotations

import torch
from torch import nn

from jepactl.nn.vit import gather_tokens, init_transformer_weights, make_blocks, padding_mask, \
    run_blocks


class MaskedPredictor(nn.Module):
    """I-JEPA's predictor: project D -> d, add positions, append mask tokens, transform, project.

    Each of a sample's M target blocks gets its own sequence [context; block's mask tokens], as
    in the reference, so predictions for one block never see another block's queries.
    """

    def __init__(self, encoder_dim: int, dim: int, depth: int, num_heads: int,
                 position_table: torch.Tensor, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 bias: bool = True, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.config = {"encoder_dim": encoder_dim, "dim": dim, "depth": depth,
                       "num_heads": num_heads, "mlp_ratio": mlp_ratio, "qkv_bias": qkv_bias,
                       "bias": bias, "norm_eps": norm_eps}
        self.embed = nn.Linear(encoder_dim, dim, bias=bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", position_table, persistent=False)
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio, qkv_bias, bias, 0.0, norm_eps)
        self.norm = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.proj = nn.Linear(dim, encoder_dim, bias=bias)
        self.activation_checkpointing = False
        init_transformer_weights(self, self.blocks)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_index: torch.Tensor,
                context_valid: torch.Tensor | None, target_index: torch.Tensor) -> torch.Tensor:
        """Return predictions (B, M, T, D) for target_index (B, M, T) from context (B, K, D)."""
        batch, blocks, per_block = target_index.shape
        pos = self.pos_embed.to(context.dtype).unsqueeze(0).expand(batch, -1, -1)
        ctx = self.embed(context) + gather_tokens(pos, context_index)
        ctx = ctx.repeat_interleave(blocks, dim=0)  # (B*M, K, d)
        queries = self.mask_token.to(ctx.dtype) + gather_tokens(pos, target_index)
        queries = queries.reshape(batch * blocks, per_block, -1)
        x = torch.cat([ctx, queries], dim=1)
        mask = None
        if context_valid is not None:
            valid = torch.cat([context_valid, context_valid.new_ones(batch, per_block)], dim=1)
            mask = padding_mask(valid.repeat_interleave(blocks, dim=0))
        x = run_blocks(self.blocks, x, mask, self.activation_checkpointing)
        x = self.proj(self.norm(x[:, -per_block:]))
        return x.reshape(batch, blocks, per_block, -1)
