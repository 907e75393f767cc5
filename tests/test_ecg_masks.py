"""1-D multi-block masks (ECG-JEPA): kept fraction, block lengths, batching, determinism."""

from __future__ import annotations

import torch

from jepactl.masks.multiblock_1d import MultiBlockMask1D, MultiBlockMask1DConfig, random_composition


def masked_runs(mask_row: torch.Tensor) -> list[int]:
    """Return the lengths of the contiguous True runs of a boolean row."""
    runs, length = [], 0
    for value in mask_row.tolist() + [False]:
        if value:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_every_batch_keeps_15_to_25_percent_in_masked_blocks_of_at_least_10():
    sampler = MultiBlockMask1D(200, MultiBlockMask1DConfig())
    gen = torch.Generator().manual_seed(0)
    block_counts = set()
    for _ in range(30):
        masks = sampler(16, gen)
        keep = masks.context.shape[1]
        assert 30 <= keep <= 50  # 15-25% of 200
        assert masks.targets.shape == (16, 1, 200 - keep)
        for b in range(16):
            both = torch.cat([masks.context[b], masks.targets[b, 0]])
            assert torch.equal(both.sort().values, torch.arange(200))  # a partition
            is_masked = torch.zeros(200, dtype=torch.bool)
            is_masked[masks.targets[b, 0]] = True
            runs = masked_runs(is_masked)
            assert min(runs) >= 10
            block_counts.add(len(runs))
            assert torch.all(masks.context[b].diff() > 0)
    assert len(block_counts) >= 3  # one to four blocks, not always the same layout


def test_masks_depend_only_on_the_seed_and_differ_between_samples():
    sampler = MultiBlockMask1D(64, MultiBlockMask1DConfig())
    first = sampler(8, torch.Generator().manual_seed(5))
    again = sampler(8, torch.Generator().manual_seed(5))
    assert torch.equal(first.context, again.context)
    assert len({tuple(row.tolist()) for row in first.context}) == 8


def test_random_compositions_sum_to_the_total_and_cover_the_extremes():
    parts = random_composition(4000, 6, 3, torch.Generator().manual_seed(0))
    assert torch.all(parts.sum(1) == 6) and torch.all(parts >= 0)
    assert parts.max() == 6  # all in one part happens
    # Uniform over the 28 compositions of 6 into 3 parts: each has probability 1/28.
    distinct, counts = torch.unique(parts, dim=0, return_counts=True)
    assert len(distinct) == 28
    assert counts.min() > 4000 / 28 * 0.6 and counts.max() < 4000 / 28 * 1.4
