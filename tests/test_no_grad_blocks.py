"""The in-place no-grad block forward computes what timm's blocks compute, and nothing else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepactl.nn.no_grad_blocks import run_blocks_in_place, supports_in_place_forward
from jepactl.nn.vit import make_blocks


def blocks(drop_path: float = 0.0) -> nn.ModuleList:
    torch.manual_seed(0)
    stack = make_blocks(32, 3, 4, 4.0, True, True, drop_path, 1e-6)
    for p in stack.parameters():  # non-zero biases, so the bias handling is exercised
        nn.init.normal_(p, std=0.1)
    return stack.eval()


def module_forward(stack: nn.ModuleList, x: torch.Tensor, mask=None) -> torch.Tensor:
    for block in stack:
        x = block(x, attn_mask=mask)
    return x


@pytest.mark.parametrize("with_mask", [False, True])
def test_in_place_forward_matches_timm_blocks_and_keeps_the_input(with_mask):
    stack = blocks()
    x = torch.randn(3, 10, 32)
    mask = None
    if with_mask:  # additive key-padding mask: the last two keys of sample 0 are padding
        mask = torch.zeros(3, 1, 1, 10)
        mask[0, ..., 8:] = float("-inf")
    before = x.clone()
    with torch.no_grad():
        expected = module_forward(stack, x, mask)
        got = run_blocks_in_place(stack, x, mask)
    assert torch.equal(x, before)
    assert got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_in_place_forward_matches_under_bf16_autocast():
    stack = blocks()
    x = torch.randn(2, 7, 32)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        expected = module_forward(stack, x)
        got = run_blocks_in_place(stack, x, None)
    assert got.dtype == expected.dtype
    torch.testing.assert_close(got.float(), expected.float(), rtol=0.0, atol=0.0)


def test_blocks_it_cannot_compute_exactly_take_timm_forward():
    stack = blocks(drop_path=0.5)
    assert all(supports_in_place_forward(b) for b in stack)  # eval: drop-path is off
    stack.train()
    assert not supports_in_place_forward(stack[1])  # active drop-path: timm's forward
    assert supports_in_place_forward(stack[0])  # the ramp starts at rate 0
    stack.eval()
    stack[2].mlp.act = nn.ReLU()
    assert not supports_in_place_forward(stack[2])
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            run_blocks_in_place(stack, x, None), module_forward(stack, x), rtol=1e-5, atol=1e-5
        )


def test_in_place_forward_refuses_to_run_with_autograd_on():
    with pytest.raises(RuntimeError, match="autograd off"):
        run_blocks_in_place(blocks(), torch.randn(1, 4, 32), None)
