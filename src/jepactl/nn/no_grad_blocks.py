"""A forward pass of timm pre-norm blocks for when autograd is off: the residual stream in place.

Every EMA target encoder runs without gradients on every training step (in I-JEPA the target
encoder sees all tokens and is the largest single forward of the step), and so do probes and
exports. Out of place, each block allocates and writes a fresh residual stream twice, a fresh
output for every linear layer and another for GELU's result; on CPU those are memory-bound
passes over the largest activations, and glibc's allocator returns such large buffers to the
system and page-faults them back in on the next block (a ViT-Tiny target forward at batch 32:
3,800-12,300 page faults, none on this path; benchmarks/perf/target_forward.py). Without
autograd none of the intermediates must be kept, so this path

- adds the attention projection and the second MLP layer straight into the residual stream
  (``rows.add_(bias).addmm_(input, weight.T)``: no output buffer, no separate residual add),
- writes the qkv and first MLP layer outputs into two buffers reused by every block of the
  stack (in fp32; under autocast the layers allocate as usual), and applies GELU in place.

It computes the same function as ``block(x)`` up to float rounding: ``x + (a @ W.T + b)`` becomes
``(x + b) + a @ W.T``. Blocks with anything else inside (layer scale, gated or normalised
attention, another activation, active dropout) take timm's own forward.
"""

from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

from jepactl.compile import is_compiled
from jepactl.nn.attention import Attention, scaled_dot_product_attention


def _is_identity(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity)


def _inactive_dropout(module: nn.Module, training: bool) -> bool:
    """True when a dropout-like module does nothing: Identity, p == 0, or eval mode."""
    return (
        _is_identity(module)
        or not training
        or getattr(module, "p", 1.0) == 0.0
        or getattr(module, "drop_prob", 1.0) == 0.0
    )


def supports_in_place_forward(block: nn.Module) -> bool:
    """Whether ``block`` is a plain pre-norm block this module computes exactly as timm does
    (a compiled block runs its compiled forward instead, which fuses more than this path)."""
    if not isinstance(block, Block) or is_compiled(block):
        return False
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    if not isinstance(attn, Attention) or type(mlp) is not Mlp:
        return False
    training = block.training
    return (
        _is_identity(block.ls1)
        and _is_identity(block.ls2)
        and _inactive_dropout(block.drop_path1, training)
        and _inactive_dropout(block.drop_path2, training)
        and _is_identity(attn.q_norm)
        and _is_identity(attn.k_norm)
        and _is_identity(attn.norm)
        and getattr(attn, "gate", None) is None
        and _inactive_dropout(attn.attn_drop, training)
        and _inactive_dropout(attn.proj_drop, training)
        and type(mlp.act) is nn.GELU
        and mlp.act.approximate == "none"
        and _is_identity(mlp.norm)
        and _inactive_dropout(mlp.drop1, training)
        and _inactive_dropout(mlp.drop2, training)
    )


def _add_linear_(rows: torch.Tensor, inputs: torch.Tensor, linear: nn.Linear) -> None:
    """rows += linear(inputs), accumulated in rows' own memory when the dtypes allow it."""
    weight = linear.weight
    autocast = torch.is_autocast_enabled(rows.device.type)
    if not autocast and inputs.dtype == rows.dtype == weight.dtype:
        if linear.bias is not None:
            rows.add_(linear.bias)
        rows.addmm_(inputs, weight.t())
    else:  # autocast: the product comes out in the low-precision dtype; add it, upcast, in place
        rows.add_(linear(inputs))


class _Workspace:
    """Output buffers shared by the blocks of one stack, one per role, reused block after block."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def linear(self, role: str, inputs: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        """linear(inputs) for 2-D inputs, written into this role's buffer when autocast is off.

        Under autocast the layer allocates its output as usual: ``out=`` would bypass
        autocast's casts, and casting here by hand measured slower (target_forward.py, bf16).
        """
        weight = linear.weight
        if torch.is_autocast_enabled(inputs.device.type) or inputs.dtype != weight.dtype:
            return linear(inputs)
        shape = (inputs.shape[0], weight.shape[0])
        out = self.buffers.get(role)
        if (
            out is None
            or out.shape != shape
            or out.dtype != inputs.dtype
            or out.device != inputs.device
        ):
            out = self.buffers[role] = inputs.new_empty(shape)
        if linear.bias is None:
            return torch.mm(inputs, weight.t(), out=out)
        return torch.addmm(linear.bias, inputs, weight.t(), out=out)


def _block_forward_in_place(
    block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None, workspace: _Workspace
) -> None:
    batch, tokens, dim = x.shape
    rows = x.view(batch * tokens, dim)
    attn = block.attn
    normed = block.norm1(x).view(batch * tokens, dim)
    qkv = workspace.linear("qkv", normed, attn.qkv)
    qkv = qkv.view(batch, tokens, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    heads = scaled_dot_product_attention(q, k, v, attn_mask)
    # SDPA returns (B, H, N, d) with (B, N, H, d) memory for these strided inputs: a free view.
    _add_linear_(rows, heads.transpose(1, 2).reshape(batch * tokens, -1), attn.proj)
    hidden = workspace.linear("fc1", block.norm2(x).view(batch * tokens, dim), block.mlp.fc1)
    torch.ops.aten.gelu_(hidden)
    _add_linear_(rows, hidden, block.mlp.fc2)


def run_blocks_in_place(
    blocks: nn.ModuleList, x: torch.Tensor, attn_mask: torch.Tensor | None
) -> torch.Tensor:
    """Apply ``blocks`` to ``x`` (B, N, D) without autograd; ``x`` itself is left unchanged."""
    if torch.is_grad_enabled():
        raise RuntimeError("run_blocks_in_place needs autograd off (torch.no_grad())")
    x = x.clone(memory_format=torch.contiguous_format)  # the caller's tensor stays as it was
    workspace = _Workspace()
    for block in blocks:
        if supports_in_place_forward(block):
            _block_forward_in_place(block, x, attn_mask, workspace)
        else:
            x = block(x, attn_mask=attn_mask).contiguous()
    return x
