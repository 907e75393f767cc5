"""1-D multi-block masking for sequences of patches (ECG-JEPA), a whole batch at once.

ECG-JEPA (kweimann/ECG-JEPA data/masks.py) keeps a fraction r ~ U(0.15, 0.25) of the N patches,
drawn once per batch, and masks the rest in contiguous blocks of at least ``min_block`` patches
(10 patches = 0.5 s at 500 Hz). The context is every kept patch; the target is every masked
patch (one target set). Because r is per batch, every sample keeps the same number K of
patches, so context (B, K) and target (B, N - K) index tensors stack without padding.

How blocks are placed differs from the reference, which places blocks recursively in free
intervals with a Python loop and glues small leftovers onto neighbours. Here the layout is
``gap_0, block_1, gap_1, ..., block_n, gap_n``: n masked blocks of >= ``min_block`` patches
summing to M = N - K, and n + 1 kept gaps (the outer two may be empty) summing to K. Both
splits are uniform random compositions (stars and bars: the top-k of random scores picks the
bar positions), and the block count n is drawn once per batch from 1 .. min(max_blocks,
M // min_block). Every sample gets its own positions and sizes; all of it is tensor ops. Two
blocks separated by an empty inner gap merge into one longer block, which still satisfies the
minimum size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MultiBlockMask1DConfig:
    keep_ratio: tuple[float, float] = (0.15, 0.25)  # fraction of patches the context keeps
    min_block: int = 10  # shortest masked block, in patches
    max_blocks: int = 4  # most masked blocks per sample


@dataclass
class Masks1D:
    context: torch.Tensor  # (B, K) long, ascending
    targets: torch.Tensor  # (B, 1, N - K) long, ascending


def random_composition(batch: int, total: int, parts: int, gen: torch.Generator) -> torch.Tensor:
    """Return (batch, parts) non-negative integers summing to ``total``, uniform over all."""
    if parts == 1:
        return torch.full((batch, 1), total, dtype=torch.long)
    slots = total + parts - 1
    scores = torch.rand(batch, slots, generator=gen)
    bars = scores.topk(parts - 1, dim=1).indices.sort(dim=1).values  # (B, parts-1)
    edges = torch.cat([torch.full((batch, 1), -1), bars, torch.full((batch, 1), slots)], dim=1)
    return edges.diff(dim=1) - 1


class MultiBlockMask1D:
    """Samples context/target patch indices for a batch of ``num_patches``-long sequences."""

    def __init__(self, num_patches: int, config: MultiBlockMask1DConfig) -> None:
        self.num_patches = num_patches
        self.config = config
        low = round(num_patches * config.keep_ratio[0])
        if num_patches - max(1, low) < config.min_block:
            raise ValueError(
                f"{num_patches} patches cannot hold a masked block of "
                f"{config.min_block} (mask.min_block)"
            )

    def keep_count(self, gen: torch.Generator) -> int:
        """Return K, the kept-patch count for this batch (at least 1, leaving one full block)."""
        low, high = self.config.keep_ratio
        ratio = low + (high - low) * torch.rand((), generator=gen).item()
        keep = int(round(self.num_patches * ratio))
        return min(max(1, keep), self.num_patches - self.config.min_block)

    def __call__(self, batch: int, gen: torch.Generator) -> Masks1D:
        cfg, n = self.config, self.num_patches
        keep = self.keep_count(gen)
        masked = n - keep
        most = max(1, min(cfg.max_blocks, masked // cfg.min_block))
        blocks = int(torch.randint(1, most + 1, (), generator=gen))
        block_sizes = cfg.min_block + random_composition(
            batch, masked - blocks * cfg.min_block, blocks, gen
        )
        gap_sizes = random_composition(batch, keep, blocks + 1, gen)
        # Interleave gap_0, block_1, gap_1, ...: odd segments are masked.
        segments = torch.empty(batch, 2 * blocks + 1, dtype=torch.long)
        segments[:, 0::2] = gap_sizes
        segments[:, 1::2] = block_sizes
        ends = segments.cumsum(dim=1)  # (B, S)
        positions = torch.arange(n).expand(batch, n).contiguous()
        segment_of = torch.searchsorted(ends, positions, right=True)
        is_masked = segment_of % 2 == 1
        order = torch.sort(is_masked.to(torch.uint8), dim=1, stable=True).indices
        return Masks1D(context=order[:, :keep], targets=order[:, keep:].unsqueeze(1))
