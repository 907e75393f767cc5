"""Key-value memory with sparse top-k selection: one slot per concept.

Wang & Sun's memory layer (methods.md §8; ``MemoryLayer`` in the reference's modified GPT-2):
scores = query @ keys^T / sqrt(d), keep the top-k scores, softmax over them, and return the
weighted sum of those slots' values. With top-1 the softmax weight is exactly 1, so each query
reads one value vector and only that value gets a gradient: a disentangled table of concepts
addressed by content. The reference initialises the keys from the mean token embedding of each
entity and trains only the values (``init_wernicke_mlp_keys``, ``memory_block_value_only``), so
two entities sharing a first name still land in different slots.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KeyValueMemory(nn.Module):
    """``num_slots`` (key, value) pairs read by top-``top_k`` sparse attention."""

    def __init__(self, num_slots: int, dim: int, top_k: int = 1, train_keys: bool = False) -> None:
        super().__init__()
        if not 0 < top_k <= num_slots:
            raise ValueError(f"top_k must be in [1, {num_slots}], got {top_k}")
        self.top_k = top_k
        self.keys = nn.Parameter(torch.randn(num_slots, dim) * 0.02, requires_grad=train_keys)
        self.values = nn.Parameter(torch.randn(num_slots, dim) * 0.02)

    @torch.no_grad()
    def set_keys(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (S, D) into the first S slots (the reference's key initialisation)."""
        self.keys[: keys.shape[0]].copy_(keys)

    def select(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (weights, slot indices), each (..., top_k), for queries (..., D)."""
        # Slot scores in fp32: under bf16 autocast near-equal keys could swap their order.
        scores = query.float() @ self.keys.float().T / math.sqrt(query.shape[-1])
        top, index = scores.topk(self.top_k, dim=-1)
        return F.softmax(top, dim=-1), index

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """Return the read-out (..., D): the softmax-weighted values of the top-k slots."""
        weights, index = self.select(query)
        values = self.values[index]  # (..., top_k, D)
        return (weights.unsqueeze(-1).to(values.dtype) * values).sum(dim=-2)
