"""Multi-head self-attention whose SDPA call runs in the precision that is fastest on the device.

timm's ``Attention`` (same parameters and names, so checkpoints are unchanged) with one
difference: on CPU, under bf16/fp16 autocast, q, k and v are upcast to fp32 for
``scaled_dot_product_attention``, and the output is cast back. PyTorch's CPU flash-attention
kernel is much slower in bf16 than in fp32, forward and backward (benchmarks/perf/RESULTS.md,
``sdpa_dtype.py``: 7.6x at 15 tokens, 1.4x at 196 tokens), while the linear layers around it keep
bf16's 2.5x matmul speed-up. On CUDA the bf16 kernels are the fast ones, so nothing changes there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention as TimmAttention

# Devices whose SDPA kernels are faster in fp32 than in the autocast dtype.
UPCAST_DEVICES = frozenset({"cpu"})


def sdpa_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """Return the dtype SDPA runs in for q, k, v of ``dtype`` on ``device_type``."""
    if device_type in UPCAST_DEVICES and dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return dtype


def attention_dtype(x: torch.Tensor) -> torch.dtype:
    """Return the dtype q, k and v have inside :func:`scaled_dot_product_attention` for inputs
    like ``x`` under the current autocast state."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    return sdpa_dtype(device, dtype)


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a boolean SDPA mask (True = may attend) into the additive one SDPA builds from it.

    SDPA converts a boolean mask on every call; a stack of blocks sharing one mask converts it
    once with this instead (the predictor's block mask is (B, 1, N, N): converting it in every
    layer made the predictor's forward + backward 5-8 % slower on CPU,
    benchmarks/perf/mask_conversion.py).
    """
    if mask is None or mask.dtype != torch.bool:
        return mask
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill_(~mask, float("-inf"))


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
) -> torch.Tensor:
    """SDPA that upcasts half-precision inputs on devices where fp32 attention is faster."""
    dtype = sdpa_dtype(q.device.type, q.dtype)
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.to(dtype)  # an additive mask must match q's dtype; no-op if it does
    if dtype == q.dtype:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
        )
    with torch.autocast(q.device.type, enabled=False):
        out = F.scaled_dot_product_attention(
            q.to(dtype),
            k.to(dtype),
            v.to(dtype),
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
        )
    return out.to(q.dtype)


class Attention(TimmAttention):
    """timm's attention block with :func:`scaled_dot_product_attention` as its kernel."""

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        B, N, _ = x.shape
        # getattr: timm releases before the gated variant have neither ``gate`` nor ``attn_dim``
        # (GPU images may carry an older timm than this project pins for CPU).
        gate_layer = getattr(self, "gate", None)
        gate = gate_layer(x).sigmoid() if gate_layer is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = scaled_dot_product_attention(
            q, k, v, attn_mask, self.attn_drop.p if self.training else 0.0, is_causal
        )
        x = self.norm(x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))
