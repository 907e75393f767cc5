"""The predictor: per-block isolation in both layouts, padding invariance."""

from __future__ import annotations

import pytest
import torch

from jepactl.nn.pos_embed import sincos_2d
from jepactl.nn.predictor import MaskedPredictor


def make(shared: bool) -> MaskedPredictor:
    torch.manual_seed(0)
    return MaskedPredictor(
        32, 16, depth=2, num_heads=2, position_table=sincos_2d(16, 6, 6), shared_context=shared
    ).eval()


@pytest.mark.parametrize("shared", [False, True])
def test_a_blocks_predictions_do_not_depend_on_other_blocks(shared):
    predictor = make(shared)
    context = torch.randn(2, 5, 32)
    ctx_idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[[20, 21], [30, 31]], [[22, 23], [32, 33]]])
    moved = targets.clone()
    moved[:, 1] = torch.tensor([[12, 13], [14, 15]])
    with torch.no_grad():
        a = predictor(context, ctx_idx, None, targets)
        b = predictor(context, ctx_idx, None, moved)
    assert a.shape == (2, 2, 2, 32)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-5)
    assert not torch.allclose(a[:, 1], b[:, 1], atol=1e-3)


@pytest.mark.parametrize("shared", [False, True])
def test_padded_context_slots_change_nothing(shared):
    predictor = make(shared)
    context = torch.randn(1, 4, 32)
    ctx_idx = torch.tensor([[0, 1, 2, 3]])
    targets = torch.tensor([[[20, 21]]])
    padded_ctx = torch.cat([context, torch.randn(1, 2, 32)], dim=1)
    padded_idx = torch.tensor([[0, 1, 2, 3, 0, 0]])
    valid = torch.tensor([[True, True, True, True, False, False]])
    with torch.no_grad():
        plain = predictor(context, ctx_idx, None, targets)
        padded = predictor(padded_ctx, padded_idx, valid, targets)
    assert torch.allclose(plain, padded, atol=1e-5)
