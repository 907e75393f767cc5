"""``train.compile``: compile each transformer block, not the whole training step.

Compiling the whole model (``torch.compile(model)``) re-specialises the graph whenever the
context or predictor length changes, which I-JEPA's masks do every batch: it was slower than eager
on CPU after minutes of compiling (benchmarks/perf/RESULTS.md). Every transformer in jepactl is a
stack of identical timm blocks, so compiling the block instead (PyTorch's "regional compilation")
with dynamic shapes gives one graph per block shape and mode, reused by every layer and every
length: tens of seconds to compile, and the elementwise work around the matmuls (bias, GELU,
residual adds, LayerNorms, forward and backward) fused into a few loops. On CPU that is at
parity with eager (the GEMMs and attention dominate; benchmarks/perf/compile_ab.py), so the
key is off by default.

``nn.Module.compile`` compiles in place, so parameter names and checkpoints are unchanged.
"""

from __future__ import annotations

from timm.models.vision_transformer import Block
from torch import nn


def compile_blocks(model: nn.Module) -> int:
    """Compile every transformer block of ``model`` in place; return how many were compiled."""
    count = 0
    for module in model.modules():
        if isinstance(module, Block) and not is_compiled(module):
            module.compile(dynamic=True)
            count += 1
    return count


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` was called on this module."""
    return getattr(module, "_compiled_call_impl", None) is not None
