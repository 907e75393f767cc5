"""The gradient-by-ratio target against a direct per-pixel loop, and its patch layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jepactl.domains.sar.gradient_targets import (
    GradientByRatio,
    gradient_patch_targets,
    half_window_profiles,
    patchify,
)


def direct_gradient(image: torch.Tensor, radius: int, kernel: str) -> torch.Tensor:
    """Per-pixel loops over the reference's 2-D half-window kernels (models_lomar.py GF)."""
    padded = F.pad(image[None, None].double(), (radius,) * 4, mode="reflect")[0, 0] + 0.01
    full, low, high = half_window_profiles(radius, kernel)
    height, width = image.shape
    out = torch.zeros(height, width, dtype=torch.float64)
    size = 2 * radius + 1
    for y in range(height):
        for x in range(width):
            left = right = top = bottom = 0.0
            for i in range(size):
                for j in range(size):
                    value = float(padded[y + i, x + j])
                    left += float(full[i] * low[j]) * value
                    right += float(full[i] * high[j]) * value
                    top += float(low[i] * full[j]) * value
                    bottom += float(high[i] * full[j]) * value
            out[y, x] = math.sqrt(math.log(left / right) ** 2 + math.log(top / bottom) ** 2)
    return out


@pytest.mark.parametrize("kernel", ["box", "gaussian"])
def test_gradient_by_ratio_matches_a_direct_loop(kernel: str) -> None:
    torch.manual_seed(0)
    image = torch.rand(9, 10)
    operator = GradientByRatio((2, 3), kernel)
    maps = operator(image[None, None])
    assert maps.shape == (1, 2, 9, 10)
    for channel, radius in enumerate((2, 3)):
        expected = direct_gradient(image, radius, kernel)
        assert torch.allclose(maps[0, channel].double(), expected, atol=1e-4), radius


def test_box_kernel_halves_share_the_centre_line_as_in_the_reference() -> None:
    full, low, high = half_window_profiles(2, "box")
    assert low.tolist() == [1, 1, 1, 0, 0] and high.tolist() == [0, 0, 1, 1, 1]
    assert full.tolist() == [1, 1, 1, 1, 1]
    _, g_low, g_high = half_window_profiles(2, "gaussian")
    assert g_low[2] == 0 and g_high[2] == 0 and g_low[0] == pytest.approx(g_high[4])


def test_a_step_edge_lights_up_only_near_the_edge_and_flat_regions_give_zero() -> None:
    image = torch.full((1, 1, 32, 32), 0.2)
    image[..., 16:] = 0.8
    maps = GradientByRatio((5,))(image)[0, 0]
    assert maps[:, :10].abs().max() < 1e-5 and maps[:, 22:].abs().max() < 1e-5
    # Last dark column: the left half (offsets -5..0) is 6 dark columns, the right half (0..5)
    # one dark and 5 bright ones; 11 rows each cancel in the ratio (+0.01 offset included).
    assert maps[16, 15].item() == pytest.approx(
        abs(math.log(6 * 0.21 / (0.21 + 5 * 0.81))), rel=1e-4
    )


def test_speckle_scaling_cancels_in_the_ratio() -> None:
    torch.manual_seed(1)
    image = torch.rand(1, 1, 24, 24) + 1.0
    operator = GradientByRatio((3,))
    # Multiplying the amplitude by a constant changes only the small +0.01 offset's weight.
    assert torch.allclose(operator(image), operator(image * 10), atol=5e-3)


def test_patch_targets_concatenate_scales_patch_by_patch() -> None:
    maps = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    patches = patchify(maps, 2)
    assert patches.shape == (1, 4, 8)
    # Patch 1 (top-right): scale 0's 2x2 values, then scale 1's.
    assert patches[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]
    targets = gradient_patch_targets(GradientByRatio(), torch.rand(3, 1, 64, 64), 8)
    assert targets.shape == (3, 64, 4 * 64)
    assert torch.isfinite(targets).all()
