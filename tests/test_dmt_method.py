"""DMT-JEPA as a method: recipes, EMA of the head, and a few trainer steps end to end."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.domains.image import dmt_jepa
from jepactl.recipe import load_recipe
from jepactl.train import pretrain


def tiny_dmt(max_steps: int, extra=()):
    return load_recipe(
        "image/dmt-jepa-cpu",
        [
            *TINY_IMAGE_OVERRIDES,
            f"train.max_steps={max_steps}",
            "train.checkpoint_every=100",
            *extra,
        ],
    )


def test_dmt_recipes_are_ijepa_recipes_plus_the_aggregation_head() -> None:
    paper = load_recipe("image/dmt-jepa")
    ijepa = load_recipe("image/ijepa")
    assert paper.method == "dmt-jepa"
    assert (paper.aggregation.neighbours, paper.aggregation.window, paper.aggregation.depth) == (
        4,
        3,
        2,
    )
    assert (paper.model, paper.mask, paper.predictor, paper.optim, paper.ema) == (
        ijepa.model,
        ijepa.mask,
        ijepa.predictor,
        ijepa.optim,
        ijepa.ema,
    )
    cpu, tiny = load_recipe("image/dmt-jepa-cpu"), load_recipe("image/ijepa-cpu")
    assert (cpu.model, cpu.mask, cpu.predictor, cpu.optim, cpu.ema, cpu.train) == (
        tiny.model,
        tiny.mask,
        tiny.predictor,
        tiny.optim,
        tiny.ema,
        tiny.train,
    )


def test_the_target_head_is_an_ema_copy_of_the_context_head() -> None:
    torch.manual_seed(0)
    method = dmt_jepa.build(tiny_dmt(1))
    pairs = method.ema_pairs()
    assert (method.context_head, method.target_head) in pairs
    assert all(not p.requires_grad for p in method.target_head.parameters())
    for online, target in zip(method.context_head.parameters(), method.target_head.parameters()):
        assert torch.equal(online, target)


def test_targets_come_from_the_target_head_and_gradients_reach_the_context_head() -> None:
    torch.manual_seed(0)
    recipe = tiny_dmt(1)
    method = dmt_jepa.build(recipe)
    dataset, collate, _ = dmt_jepa.pretrain_data(recipe, "builtin:shapes")
    batch = collate([dataset[(i, i, 3)] for i in range(4)])
    out = method(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert method.context_head.blocks[0].q.weight.grad.abs().sum() > 0
    assert method.context_encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    # Changing the target head changes the loss: the targets are built by it.
    with torch.no_grad():
        before = method(batch)["loss"].item()
        method.target_head.norm.bias.add_(1.0)
        after = method(batch)["loss"].item()
    assert abs(after - before) > 1e-3


@pytest.mark.slow
def test_dmt_pretrains_with_the_shared_trainer_and_moves_the_target_head(tmp_path) -> None:
    run = tmp_path / "dmt"
    recipe = tiny_dmt(3, ["ema.start=0.5", "ema.end=0.5"])
    torch.manual_seed(0)
    initial = dmt_jepa.build(recipe).target_head.norm.weight.clone()
    result = pretrain(recipe, run, quiet=True)
    assert result.finished and result.step == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["loss"] == r["loss"] for r in records)
    from jepactl.checkpoint import load_latest_checkpoint

    state = load_latest_checkpoint(run / "checkpoints")[0]["model"]
    assert not torch.equal(state["target_head.norm.weight"], initial)
