"""Checks that only a CUDA device can answer; each skips with that reason elsewhere.

They run in `benchmarks/perf/gpu_check.sh` (`pytest -m gpu`): the precision the card gets, one
real training step in each precision, the CUDA memory meter the micro-batch planner trusts,
and fused AdamW.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_IMAGE_OVERRIDES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def tiny_recipe(extra=()):
    from jepactl.recipe import load_recipe

    return load_recipe(
        "image/ijepa-cpu",
        [*TINY_IMAGE_OVERRIDES, "train.max_steps=3", "train.checkpoint_every=100", *extra],
    )


def test_the_card_gets_bf16_when_it_has_it_and_fp16_otherwise():
    from jepactl.precision import resolve_precision

    chosen, notice = resolve_precision("bf16", torch.device("cuda"))
    if torch.cuda.is_bf16_supported(including_emulation=False):
        assert (chosen, notice) == ("bf16", None)
    else:
        assert chosen == "fp16" and "gradient scaler" in notice


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_a_run_trains_on_the_card_in_each_precision(tmp_path, precision):
    import json

    from jepactl.train import pretrain

    result = pretrain(tiny_recipe([f"train.precision={precision}"]), tmp_path / "r", quiet=True)
    assert result.finished and result.step == 3
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["device"].startswith("cuda")
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)


def test_the_cuda_peak_meter_sees_an_allocation():
    from jepactl.micro_batch import PeakMeter

    device = torch.device("cuda")
    with PeakMeter(device) as meter:
        block = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)  # 256 MiB
        del block
    assert meter.peak >= 256 * 2**20


def test_the_optimizer_is_fused_on_the_card():
    from jepactl.step import build_optimizer

    recipe = tiny_recipe()
    model = torch.nn.Linear(8, 8).cuda()
    optimizer = build_optimizer(model, recipe, torch.device("cuda"))
    assert optimizer.defaults.get("fused") is True
