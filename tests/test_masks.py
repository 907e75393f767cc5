"""The batched multi-block sampler: shapes, invariants, and no truncation bias."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from jepactl.masks import (
    FeatureMaskConfig,
    FeatureSubsetMask,
    LocalWindowMask,
    LocalWindowMaskConfig,
    MaskingCollate,
    Masks1D,
    MultiBlockMask1D,
    MultiBlockMask1DConfig,
    MultiBlockMask2D,
    MultiBlockMaskConfig,
)
from jepactl.masks.multiblock_2d import _block_size, pad_rows


def reference_context_counts(grid, cfg, t_size, c_size, samples, seed):
    """Per-sample Python loop, no truncation: how often each position is in the context."""
    rng = random.Random(seed)
    height, width = grid
    counts = torch.zeros(height * width)
    for _ in range(samples):
        covered = set()
        for _ in range(cfg.num_targets):
            top, left = rng.randint(0, height - t_size[0]), rng.randint(0, width - t_size[1])
            covered |= {
                (top + r) * width + left + c for r in range(t_size[0]) for c in range(t_size[1])
            }
        keep = None
        for _ in range(cfg.tries):
            top, left = rng.randint(0, height - c_size[0]), rng.randint(0, width - c_size[1])
            block = {
                (top + r) * width + left + c for r in range(c_size[0]) for c in range(c_size[1])
            } - covered
            if len(block) >= cfg.min_keep:
                keep = block
                break
        if keep is None:
            keep = set(range(height * width)) - covered
        for idx in keep:
            counts[idx] += 1
    return counts / samples


def batched_context_frequency(sampler, batches, batch, seed, truncate=False):
    gen = torch.Generator().manual_seed(seed)
    n = sampler.grid[0] * sampler.grid[1]
    counts = torch.zeros(n)
    for _ in range(batches):
        masks = sampler(batch, gen)
        context, valid = masks.context, masks.context_valid
        if valid is None:
            valid = torch.ones_like(context, dtype=torch.bool)
        if truncate:  # what the reference collator does: cut every row to the batch minimum
            shortest = int(valid.sum(1).min())
            context, valid = context[:, :shortest], valid[:, :shortest]
        counts += torch.zeros(len(context), n).scatter_add_(1, context, valid.float()).sum(0)
    return counts / (batches * batch)


def fixed_size_config(scale_t=0.15, scale_c=0.9):
    return MultiBlockMaskConfig(
        target_scale=(scale_t, scale_t),
        target_aspect=(1.0, 1.0),
        context_scale=(scale_c, scale_c),
        min_keep=10,
    )


def test_context_position_frequencies_match_a_non_truncating_reference():
    grid, cfg = (14, 14), fixed_size_config()
    sampler = MultiBlockMask2D(grid, cfg)
    t_size, c_size = _block_size(grid, 0.15, 1.0), _block_size(grid, 0.9, 1.0)
    n_batched, n_ref = 24 * 128, 3000
    got = batched_context_frequency(sampler, 24, 128, seed=1)
    ref = reference_context_counts(grid, cfg, t_size, c_size, n_ref, seed=2)
    pooled = (got * n_batched + ref * n_ref) / (n_batched + n_ref)
    se = (pooled * (1 - pooled) * (1 / n_batched + 1 / n_ref)).sqrt().clamp_min(1e-3)
    z = (got - ref) / se
    # 196 positions: |z| < 4.5 everywhere holds for a correct sampler with overwhelming odds.
    assert z.abs().max() < 4.5, f"max |z| = {z.abs().max():.2f}"


def test_truncating_to_the_batch_minimum_would_fail_the_same_check():
    """The check above has teeth: raster-order truncation (ijepa #60) is detected.

    It runs on the sampler's own ``ragged_context: truncate`` mode (the reference's collator),
    which must therefore show the bias too.
    """
    grid = (14, 14)
    cfg = replace(fixed_size_config(), ragged_context="truncate")
    sampler = MultiBlockMask2D(grid, cfg)
    got = batched_context_frequency(sampler, 24, 128, seed=1)
    ref = reference_context_counts(
        grid, cfg, _block_size(grid, 0.15, 1.0), _block_size(grid, 0.9, 1.0), 3000, seed=2
    )
    top_rows, bottom_rows = got.view(14, 14)[:3].mean(), got.view(14, 14)[-3:].mean()
    assert top_rows - bottom_rows > 0.1  # the truncated sampler favours the top of the image
    assert (got - ref).abs().max() > 0.2


def test_targets_are_blocks_outside_the_context_and_counts_are_respected():
    grid = (16, 16)
    sampler = MultiBlockMask2D(grid, MultiBlockMaskConfig())
    masks = sampler(64, torch.Generator().manual_seed(0))
    b, m, t = masks.targets.shape
    assert (b, m) == (64, 4)
    valid = (
        masks.context_valid
        if masks.context_valid is not None
        else torch.ones_like(masks.context, dtype=torch.bool)
    )
    for i in range(b):
        ctx = set(masks.context[i][valid[i]].tolist())
        tgt = set(masks.targets[i].flatten().tolist())
        assert not ctx & tgt
        assert len(ctx) >= 10
        rows = sorted({x // 16 for x in masks.targets[i, 0].tolist()})
        cols = sorted({x % 16 for x in masks.targets[i, 0].tolist()})
        assert len(rows) * len(cols) == t  # a full rectangle
        assert rows == list(range(rows[0], rows[-1] + 1))


def test_small_grid_with_paper_scales_terminates_and_keeps_context():
    """The reference hangs on 8x8 grids at batch 64 (methods.md quirk 3); this must not."""
    sampler = MultiBlockMask2D((8, 8), MultiBlockMaskConfig())
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        masks = sampler(64, gen)
        valid = masks.context_valid
        counts = valid.sum(1) if valid is not None else torch.full((64,), masks.context.shape[1])
        assert int(counts.min()) >= 1


def test_pad_rows_keeps_every_kept_index_in_raster_order():
    keep = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    idx, valid = pad_rows(keep)
    assert idx.tolist()[0] == [0, 2, 3]
    assert idx[1, 0].item() == 1 and valid.tolist() == [[True, True, True], [True, False, False]]


def test_same_generator_seed_gives_the_same_masks():
    sampler = MultiBlockMask2D((14, 14), MultiBlockMaskConfig())
    a = sampler(8, torch.Generator().manual_seed(5))
    b = sampler(8, torch.Generator().manual_seed(5))
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)


def test_truncate_mode_cuts_every_row_to_the_batch_minimum_in_raster_order():
    grid = (16, 16)
    pad = MultiBlockMask2D(grid, MultiBlockMaskConfig())
    cut = MultiBlockMask2D(grid, MultiBlockMaskConfig(ragged_context="truncate"))
    padded = pad(32, torch.Generator().manual_seed(3))
    truncated = cut(32, torch.Generator().manual_seed(3))
    counts = padded.context_valid.sum(1)
    assert truncated.context_valid is None
    assert truncated.context.shape == (32, int(counts.min()))
    assert torch.equal(truncated.context, padded.context[:, : int(counts.min())])
    assert torch.equal(truncated.targets, padded.targets)


def test_unknown_ragged_context_mode_is_a_recipe_error():
    from jepactl.errors import RecipeError

    with pytest.raises(RecipeError, match="mask.ragged_context"):
        MultiBlockMask2D((8, 8), MultiBlockMaskConfig(ragged_context="drop"))


# ------------------------------------------------------------------ the shared collate


def shared_collate_cases():
    return {
        "multiblock_2d": (
            "images",
            (3, 32, 32),
            MultiBlockMask2D((8, 8), MultiBlockMaskConfig(min_keep=4)),
        ),
        "multiblock_2d-truncate": (
            "images",
            (3, 32, 32),
            MultiBlockMask2D((8, 8), MultiBlockMaskConfig(min_keep=4, ragged_context="truncate")),
        ),
        "multiblock_1d": ("signals", (2, 640), MultiBlockMask1D(40, MultiBlockMask1DConfig())),
        "feature_subsets": ("features", (9,), FeatureSubsetMask(9, FeatureMaskConfig())),
        "local_windows": (
            "images",
            (1, 32, 32),
            LocalWindowMask((8, 8), LocalWindowMaskConfig(window_size=3)),
        ),
    }


def collate_samples(field, shape, count=6, batch_seed=1234):
    return [
        {
            field: torch.randn(shape, generator=torch.Generator().manual_seed(i)),
            "batch_seed": batch_seed,
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("case", list(shared_collate_cases()))
def test_shared_collate_stacks_the_field_and_draws_the_samplers_masks_from_the_batch_seed(case):
    from dataclasses import fields

    field, shape, sampler = shared_collate_cases()[case]
    samples = collate_samples(field, shape)
    batch = MaskingCollate(field, sampler)(samples)
    direct = sampler(len(samples), torch.Generator().manual_seed(1234))
    expected = {
        f.name: getattr(direct, f.name)
        for f in fields(direct)
        if getattr(direct, f.name) is not None
    }
    assert set(batch) == {field, *expected}
    assert torch.equal(batch[field], torch.stack([s[field] for s in samples]))
    for name, value in expected.items():
        assert torch.equal(batch[name], value), name
    # Batch-first: the trainer slices every tensor along dim 0 into micro-batches.
    assert all(value.shape[0] == len(samples) for value in batch.values())
    if case == "multiblock_2d-truncate":
        assert "context_valid" not in batch


@pytest.mark.parametrize("case", list(shared_collate_cases()))
def test_shared_collate_survives_pickling_for_loader_workers(case):
    import pickle

    field, shape, sampler = shared_collate_cases()[case]
    collate = MaskingCollate(field, sampler)
    copy = pickle.loads(pickle.dumps(collate))
    samples = collate_samples(field, shape, batch_seed=7)
    a, b = collate(samples), copy(samples)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_shared_collate_refuses_masks_that_are_not_batch_first():
    def transposed(batch, gen):
        return Masks1D(
            context=torch.zeros(3, batch, dtype=torch.long),
            targets=torch.zeros(batch, 1, 2, dtype=torch.long),
        )

    with pytest.raises(ValueError, match="'context' of shape \\(3, 4\\).*batch-first"):
        MaskingCollate("x", transposed)(collate_samples("x", (2,), count=4))
