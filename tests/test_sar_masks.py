"""LoMaR local-window masks: whole windows inside the grid, a fixed number masked, batched."""

from __future__ import annotations

import pytest
import torch

from jepactl.masks import LocalWindowMask, LocalWindowMaskConfig


def test_windows_are_square_blocks_inside_the_grid_with_80_percent_masked() -> None:
    sampler = LocalWindowMask((14, 14), LocalWindowMaskConfig())  # the paper: 4 x 7x7, 0.8
    masks = sampler(16, torch.Generator().manual_seed(0))
    assert masks.windows.shape == (16, 4, 49) and masks.masked.shape == (16, 4, 49)
    assert sampler.masked_per_window == 39  # int(49 * 0.8), as the reference
    assert (masks.masked.sum(-1) == 39).all()
    rows, cols = masks.windows // 14, masks.windows % 14
    assert rows.min() >= 0 and rows.max() < 14
    # Each window is 7 consecutive rows by 7 consecutive columns, in raster order.
    top, left = rows[..., :1], cols[..., :1]
    expected_rows = top + torch.arange(7).repeat_interleave(7)
    expected_cols = left + torch.arange(7).repeat(7)
    assert torch.equal(rows, expected_rows) and torch.equal(cols, expected_cols)


def test_masks_are_drawn_per_sample_and_reproducible_from_the_seed() -> None:
    sampler = LocalWindowMask((8, 8), LocalWindowMaskConfig(window_size=4))
    a = sampler(32, torch.Generator().manual_seed(1))
    b = sampler(32, torch.Generator().manual_seed(1))
    assert torch.equal(a.windows, b.windows) and torch.equal(a.masked, b.masked)
    assert len({tuple(w.tolist()) for w in a.windows[:, 0]}) > 1  # corners differ by sample
    assert len({tuple(m.tolist()) for m in a.masked[:, 0]}) > 1
    # Over many windows every position of the window is masked about 80% of the time.
    many = sampler(2000, torch.Generator().manual_seed(2)).masked.float().mean(dim=(0, 1))
    assert torch.allclose(many, torch.full_like(many, 12 / 16), atol=0.03)


def test_impossible_windows_are_rejected() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        LocalWindowMask((6, 6), LocalWindowMaskConfig(window_size=7))
    with pytest.raises(ValueError, match="mask at least one"):
        LocalWindowMask((8, 8), LocalWindowMaskConfig(window_size=2, mask_ratio=0.1))
