"""``train.compile``: blocks compiled in place, same names, same numbers as eager."""

from __future__ import annotations

import pytest
import torch

from jepactl.compile import compile_blocks, is_compiled
from jepactl.domains.image import ijepa
from jepactl.nn.no_grad_blocks import supports_in_place_forward
from jepactl.recipe import load_recipe
from jepactl.train import build_method


def tiny_method(compile_: bool):
    recipe = load_recipe(
        "image/ijepa-cpu",
        [
            "data.image_size=16",
            "model.embed_dim=32",
            "model.depth=2",
            "model.num_heads=2",
            "predictor.embed_dim=16",
            "predictor.depth=1",
            "predictor.num_heads=2",
            f"train.compile={compile_}",
        ],
    )
    return build_method(ijepa, recipe)


def test_compile_marks_every_transformer_block_and_keeps_parameter_names():
    eager, compiled = tiny_method(False), tiny_method(True)
    blocks = [m for m in compiled.modules() if m.__class__.__name__ == "Block"]
    assert len(blocks) == 2 + 2 + 1  # context, target, predictor
    assert all(is_compiled(b) for b in blocks)
    assert not any(is_compiled(m) for m in eager.modules())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    # A compiled block runs its compiled forward, not the eager in-place no-grad path.
    assert not supports_in_place_forward(blocks[0])
    assert supports_in_place_forward(
        next(m for m in eager.modules() if m.__class__.__name__ == "Block").eval()
    )
    assert compile_blocks(compiled) == 0  # already compiled: nothing to do


@pytest.mark.slow
def test_compiled_blocks_match_eager_forward_and_gradients_across_lengths():
    torch.manual_seed(0)
    method = tiny_method(False)
    encoder = method.context_encoder
    x = torch.randn(2, 3, 16, 16)
    outputs = []
    for compiled in (False, True):
        if compiled:
            compile_blocks(encoder)
        encoder.zero_grad()
        for keep in (torch.arange(5).repeat(2, 1), torch.arange(9).repeat(2, 1)):
            out = encoder(x, keep)  # two lengths: one dynamic graph, no failure on the second
            out.square().mean().backward()
        outputs.append((out.detach(), encoder.blocks[0].mlp.fc1.weight.grad.clone()))
    (eager_out, eager_grad), (comp_out, comp_grad) = outputs
    torch.testing.assert_close(comp_out, eager_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(comp_grad, eager_grad, rtol=1e-4, atol=1e-6)
