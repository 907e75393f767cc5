"""Vision-Transformer encoder on timm blocks, fed only the tokens it should see.

The encoder is domain-agnostic: a tokenizer (``jepactl.nn.tokenizers``) turns a sample into
N tokens, a fixed position table gives each token its place, and ``forward(x, keep=...)``
gathers the visible tokens *before* the transformer, so the context encoder never spends a
FLOP on masked tokens. Batches whose samples keep different numbers of tokens are padded to the
longest and carry a key-padding mask, which timm's attention passes to SDPA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from jepactl.nn.attention import Attention, additive_mask, attention_dtype
from jepactl.nn.no_grad_blocks import run_blocks_in_place
from jepactl.nn.tokenizers import build_tokenizer


@dataclass
class EncoderConfig:
    """Transformer sizes; the tokenizer's own settings come from the domain's data section."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    qkv_bias: bool = True
    bias: bool = True  # False removes every bias term (ECG-JEPA)
    num_registers: int = 0
    drop_path: float = 0.0
    norm_eps: float = 1e-6


def make_blocks(
    dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    qkv_bias: bool,
    bias: bool,
    drop_path: float,
    norm_eps: float,
) -> nn.ModuleList:
    """Return ``depth`` timm pre-norm blocks with a linear drop-path ramp.

    Attention is :class:`jepactl.nn.attention.Attention`: timm's, with SDPA run in fp32 on CPU.
    """
    norm = partial(nn.LayerNorm, eps=norm_eps, bias=bias)
    rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
    return nn.ModuleList(
        Block(
            dim,
            num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias and bias,
            proj_bias=bias,
            drop_path=rate,
            norm_layer=norm,
            attn_layer=Attention,
        )
        for rate in rates
    )


def init_transformer_weights(module: nn.Module, blocks: nn.ModuleList) -> None:
    """I-JEPA init: trunc-normal(0.02) linears, then residual projections scaled by 1/sqrt(2l)."""

    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    module.apply(_init)
    with torch.no_grad():
        for layer_id, block in enumerate(blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Return x[b, index[b, ...]] for x of shape (B, N, D) and index of shape (B, ...)."""
    flat = index.reshape(index.shape[0], -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*index.shape, x.shape[-1])


def padding_mask(valid: torch.Tensor | None, prefix: int = 0) -> torch.Tensor | None:
    """Return an SDPA boolean mask (B, 1, 1, prefix+K) letting every query see valid keys."""
    if valid is None:
        return None
    if prefix:
        valid = torch.cat([valid.new_ones(valid.shape[0], prefix), valid], dim=1)
    return valid[:, None, None, :]


def run_blocks(
    blocks: nn.ModuleList, x: torch.Tensor, attn_mask: torch.Tensor | None, use_checkpoint: bool
) -> torch.Tensor:
    attn_mask = additive_mask(attn_mask, attention_dtype(x))  # once, not once per block
    if not torch.is_grad_enabled():  # target encoders, probes, exports
        return run_blocks_in_place(blocks, x, attn_mask)
    for block in blocks:
        if use_checkpoint and x.requires_grad:
            x = checkpoint(block, x, attn_mask=attn_mask, use_reentrant=False)
        else:
            x = block(x, attn_mask=attn_mask)
    return x


class TransformerEncoder(nn.Module):
    """Tokenizer + fixed positions + registers + timm blocks + final LayerNorm."""

    def __init__(self, tokenizer_config: dict, config: EncoderConfig) -> None:
        super().__init__()
        self.tokenizer_config = dict(tokenizer_config)
        self.config = config
        self.tokenizer = build_tokenizer(
            self.tokenizer_config, config.embed_dim, config.patch_size, bias=config.bias
        )
        self.register_buffer(
            "pos_embed", self.tokenizer.position_table(config.embed_dim), persistent=False
        )
        self.registers = (
            nn.Parameter(torch.zeros(1, config.num_registers, config.embed_dim))
            if config.num_registers
            else None
        )
        self.blocks = make_blocks(
            config.embed_dim,
            config.depth,
            config.num_heads,
            config.mlp_ratio,
            config.qkv_bias,
            config.bias,
            config.drop_path,
            config.norm_eps,
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps, bias=config.bias)
        self.activation_checkpointing = False
        init_transformer_weights(self, self.blocks)
        if self.registers is not None:
            nn.init.trunc_normal_(self.registers, std=0.02)

    @property
    def num_tokens(self) -> int:
        return self.pos_embed.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        keep_valid: torch.Tensor | None = None,
        return_registers: bool = False,
    ) -> torch.Tensor:
        """Return normalised tokens (B, K, D) for the kept positions (all if ``keep`` is None).

        ``keep`` (B, K) holds token indices; ``keep_valid`` (B, K) marks real entries when the
        rows were padded to a common length. Register tokens are dropped from the output unless
        ``return_registers``, in which case they come first.
        """
        tokens = self.tokenizer(x) + self.pos_embed.to(
            dtype=x.dtype if x.is_floating_point() else self.pos_embed.dtype
        )
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        prefix = 0
        if self.registers is not None:
            prefix = self.registers.shape[1]
            tokens = torch.cat([self.registers.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        mask = padding_mask(keep_valid, prefix) if keep is not None else None
        tokens = run_blocks(self.blocks, tokens, mask, self.activation_checkpointing)
        tokens = self.norm(tokens)
        return tokens if return_registers else tokens[:, prefix:]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Return one feature vector per sample: the mean of the final patch tokens."""
        return self.forward(x).mean(dim=1)


def layer_norm_targets(h: torch.Tensor) -> torch.Tensor:
    """I-JEPA target normalisation: a LayerNorm without parameters over the channel axis."""
    return F.layer_norm(h, (h.shape[-1],))
