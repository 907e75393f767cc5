"""The narrow JEPA predictor: context tokens + mask tokens at target positions -> predictions."""

from __future__ import annotations

import torch
from torch import nn

from jepactl.nn.vit import (
    gather_tokens,
    init_transformer_weights,
    make_blocks,
    padding_mask,
    run_blocks,
)


def block_diagonal_mask(
    context_len: int, blocks: int, per_block: int, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean (N, N) attention mask of the shared-context sequence [context; M blocks of T]:
    a query sees the context keys always and the mask-token keys of its own block only, so
    context tokens see only the context (True = may attend)."""
    group = torch.cat(
        [
            torch.full((context_len,), -1, device=device),
            torch.arange(blocks, device=device).repeat_interleave(per_block),
        ]
    )
    return (group[None, :] == -1) | (group[None, :] == group[:, None])


class MaskedPredictor(nn.Module):
    """I-JEPA's predictor: project D -> d, add positions, append mask tokens, transform, project.

    ``shared_context=False`` (the reference): each of a sample's M target blocks gets its own
    sequence [context; block's mask tokens], so the context is processed M times.
    ``shared_context=True``: one sequence [context; all M blocks' mask tokens] per sample with a
    block-diagonal attention mask: queries of block m see the context and block m only, as in
    the reference, but context tokens see only the context (in the reference they also see the
    one block of their copy). The predictions for a block therefore differ from the reference's,
    so this is a recipe choice, measured by its probe result in benchmarks/RESULTS.md, not an
    equivalence; it runs the predictor on K + M*T tokens instead of M*(K + T).
    """

    def __init__(
        self,
        encoder_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        position_table: torch.Tensor,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        bias: bool = True,
        norm_eps: float = 1e-6,
        shared_context: bool = False,
    ) -> None:
        super().__init__()
        self.shared_context = shared_context
        self.config = {
            "encoder_dim": encoder_dim,
            "dim": dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "qkv_bias": qkv_bias,
            "bias": bias,
            "norm_eps": norm_eps,
            "shared_context": shared_context,
        }
        self.embed = nn.Linear(encoder_dim, dim, bias=bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", position_table, persistent=False)
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio, qkv_bias, bias, 0.0, norm_eps)
        self.norm = nn.LayerNorm(dim, eps=norm_eps, bias=bias)
        self.proj = nn.Linear(dim, encoder_dim, bias=bias)
        self.activation_checkpointing = False
        init_transformer_weights(self, self.blocks)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self,
        context: torch.Tensor,
        context_index: torch.Tensor,
        context_valid: torch.Tensor | None,
        target_index: torch.Tensor,
    ) -> torch.Tensor:
        """Return predictions (B, M, T, D) for target_index (B, M, T) from context (B, K, D)."""
        batch, blocks, per_block = target_index.shape
        pos = self.pos_embed.to(context.dtype).unsqueeze(0).expand(batch, -1, -1)
        ctx = self.embed(context) + gather_tokens(pos, context_index)
        if self.shared_context:
            return self._forward_shared(ctx, context_valid, target_index, pos)
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

    def _forward_shared(
        self,
        ctx: torch.Tensor,
        context_valid: torch.Tensor | None,
        target_index: torch.Tensor,
        pos: torch.Tensor,
    ) -> torch.Tensor:
        batch, blocks, per_block = target_index.shape
        queries = self.mask_token.to(ctx.dtype) + gather_tokens(pos, target_index.flatten(1))
        x = torch.cat([ctx, queries], dim=1)
        context_len = ctx.shape[1]
        allowed = block_diagonal_mask(context_len, blocks, per_block, ctx.device)
        mask = allowed.unsqueeze(0).expand(batch, -1, -1)
        if context_valid is not None:
            key_valid = torch.cat(
                [context_valid, context_valid.new_ones(batch, blocks * per_block)], dim=1
            )
            mask = mask & key_valid[:, None, :]
        x = run_blocks(self.blocks, x, mask[:, None], self.activation_checkpointing)
        x = self.proj(self.norm(x[:, context_len:]))
        return x.reshape(batch, blocks, per_block, -1)
