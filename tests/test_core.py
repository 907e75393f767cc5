"""Encoder, EMA and schedules: the numbers the JEPA core depends on."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jepactl.monitor import CollapseWatch, collapse_stats
from jepactl.nn.ema import ema_update
from jepactl.nn.tokenizers import build_tokenizer
from jepactl.nn.vit import EncoderConfig, TransformerEncoder
from jepactl.recipe import EmaConfig, OptimConfig
from jepactl.schedules import ema_momentum, learning_rate, weight_decay


def encoder() -> TransformerEncoder:
    torch.manual_seed(0)
    cfg = EncoderConfig(embed_dim=32, depth=2, num_heads=2, patch_size=4, num_registers=1)
    return TransformerEncoder({"kind": "patch2d", "in_chans": 3, "img_size": 16}, cfg).eval()


def test_context_encoder_sees_only_kept_tokens_and_ignores_padding():
    enc = encoder()
    x = torch.randn(1, 3, 16, 16)
    keep = torch.tensor([[0, 5, 7]])
    with torch.no_grad():
        kept = enc(x, keep)
        padded = enc(x, torch.tensor([[0, 5, 7, 0]]), torch.tensor([[True, True, True, False]]))
        full = enc(x)
    assert kept.shape == (1, 3, 32) and full.shape == (1, 16, 32)
    assert torch.allclose(kept, padded[:, :3], atol=1e-5)
    x2 = x.clone()
    x2[..., 8:, 8:] += 5.0  # change a patch that is not kept (patch 10)
    with torch.no_grad():
        assert torch.allclose(enc(x2, keep), kept, atol=1e-6)


@pytest.mark.parametrize(
    "config, shape",
    [
        ({"kind": "patch2d", "in_chans": 3, "img_size": 16}, (2, 3, 16, 16)),
        ({"kind": "patch1d", "leads": 12, "signal_length": 40}, (2, 12, 40)),
    ],
)
def test_patch_tokenizers_return_contiguous_tokens_in_patch_order(config, shape):
    # A transposed (channel-stride-N) token tensor would make every LayerNorm of the target
    # encoder copy its input; the tokens must be contiguous (B, N, D) with patch n in row n.
    tokenizer = build_tokenizer(config, 8, 4)
    x = torch.randn(shape)
    tokens = tokenizer(x)
    assert tokens.is_contiguous()
    conv = tokenizer.proj(x).flatten(2)  # (B, D, N)
    assert tokens.shape == (2, conv.shape[2], 8)
    assert torch.equal(tokens[:, 3], conv[:, :, 3])


def test_ema_update_is_the_lerp_formula():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = [
        0.9 * t.detach() + 0.1 * o.detach()
        for t, o in zip(target.parameters(), online.parameters())
    ]
    ema_update(target, online, 0.9)
    for got, want in zip(target.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-7)


def test_schedules_follow_the_ijepa_formulas():
    cfg = OptimConfig(
        lr=1e-3,
        start_lr=2e-4,
        final_lr=1e-6,
        warmup_steps=10,
        weight_decay=0.04,
        final_weight_decay=0.4,
    )
    assert learning_rate(0, 110, cfg) == pytest.approx(2e-4)
    assert learning_rate(5, 110, cfg) == pytest.approx(6e-4)
    assert learning_rate(10, 110, cfg) == pytest.approx(1e-3)
    assert learning_rate(60, 110, cfg) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert learning_rate(110, 110, cfg) == pytest.approx(1e-6)
    assert weight_decay(0, 100, cfg) == pytest.approx(0.04)
    assert weight_decay(50, 100, cfg) == pytest.approx(0.22)
    assert weight_decay(100, 100, cfg) == pytest.approx(0.4)
    assert ema_momentum(50, 100, EmaConfig(0.996, 1.0)) == pytest.approx(0.998)


def test_collapse_monitors_distinguish_isotropic_from_collapsed():
    torch.manual_seed(0)
    iso = collapse_stats(torch.randn(512, 8))
    line = collapse_stats(torch.randn(512, 1) * torch.ones(1, 8))
    assert iso["effective_rank"] > 7.5 and line["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert collapse_stats(torch.ones(16, 8))["embed_std"] == 0.0
    assert math.isclose(iso["embed_std"], 1.0, rel_tol=0.1)


def test_collapse_watch_warns_once_on_a_100x_fall_but_not_on_shrinking():
    # A 4x shrink (T-JEPA on Adult) is not collapse; the entangled concept encoder's fall
    # from 0.16 to 0.0003 is. The warning names the steps and fires once.
    healthy = CollapseWatch()
    shrinking = [(50, 0.029), (100, 0.02), (1500, 0.0069)]
    assert [healthy.update(step, std) for step, std in shrinking] == [None] * 3
    watch = CollapseWatch()
    assert watch.update(0, None) is None
    assert watch.update(10, 0.16) is None and watch.update(20, 0.05) is None
    warning = watch.update(50, 0.0003)
    assert "step 50" in warning and "step 10" in warning and "1.60e-01" in warning
    assert watch.update(60, 0.0001) is None
