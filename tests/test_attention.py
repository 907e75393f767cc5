"""jepactl's attention block: timm's parameters and results, SDPA in fp32 on CPU under bf16."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention as TimmAttention

from jepactl.nn import attention
from jepactl.nn.attention import Attention


def pair(dim: int = 32, heads: int = 4) -> tuple[Attention, TimmAttention]:
    torch.manual_seed(0)
    ours, theirs = Attention(dim, heads, qkv_bias=True), TimmAttention(dim, heads, qkv_bias=True)
    ours.load_state_dict(theirs.state_dict())  # same parameter names: checkpoints unchanged
    return ours, theirs


def test_matches_timm_in_fp32_with_padding_mask_and_causal():
    ours, theirs = pair()
    x = torch.randn(3, 7, 32)
    valid = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    valid[1, ..., 5:] = False
    torch.testing.assert_close(ours(x, attn_mask=valid), theirs(x, attn_mask=valid))
    torch.testing.assert_close(ours(x, is_causal=True), theirs(x, is_causal=True))


def test_bf16_autocast_on_cpu_runs_sdpa_in_fp32(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append(q.dtype)
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    ours, _ = pair()
    x = torch.randn(2, 5, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(x)
    assert seen == [torch.float32] and out.dtype == torch.bfloat16  # back in the autocast dtype
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    reference = ours(x.detach())  # fp32 end to end
    assert (out.float() - reference).abs().max() < 0.05  # bf16 linear layers only


def test_half_inputs_keep_their_dtype_off_the_upcast_list(monkeypatch):
    monkeypatch.setattr(attention, "UPCAST_DEVICES", frozenset())
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        attention.F,
        "scaled_dot_product_attention",
        lambda q, k, v, **kw: seen.append(q.dtype) or real(q, k, v, **kw),
    )
    q = torch.randn(1, 2, 4, 8, dtype=torch.bfloat16)
    attention.scaled_dot_product_attention(q, q, q)
    assert seen == [torch.bfloat16]


def test_no_module_bypasses_the_attention_kernel():
    """Every SDPA call goes through jepactl.nn.attention, so the CPU fp32 rule holds everywhere."""
    from pathlib import Path

    import jepactl

    root = Path(jepactl.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "attention.py" and "F.scaled_dot_product_attention" in path.read_text()
    ]
    assert offenders == []


def test_blocks_convert_a_boolean_mask_once_with_the_same_result(monkeypatch):
    # run_blocks turns the boolean mask into SDPA's additive form once for all blocks; the
    # output is bit-identical to passing the boolean mask to every block (fp32 and bf16).
    from jepactl.nn.vit import make_blocks, run_blocks

    torch.manual_seed(0)
    blocks = make_blocks(16, 3, 2, 2.0, True, True, 0.0, 1e-6)
    x = torch.randn(2, 9, 16)
    mask = torch.rand(2, 1, 9, 9) > 0.4
    mask[..., 0] = True  # every query sees at least one key
    converted = attention.additive_mask(mask, torch.float32)
    assert converted.dtype == torch.float32
    assert torch.equal(converted == 0, mask) and torch.isinf(converted[~mask]).all()
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            expected = x
            for block in blocks:
                expected = block(expected, attn_mask=mask)
            masks_seen = []
            real_sdpa = F.scaled_dot_product_attention
            monkeypatch.setattr(
                F,
                "scaled_dot_product_attention",
                lambda *a, attn_mask=None, **k: (
                    masks_seen.append(attn_mask) or real_sdpa(*a, attn_mask=attn_mask, **k)
                ),
            )
            got = run_blocks(blocks, x, mask, False)
            monkeypatch.setattr(F, "scaled_dot_product_attention", real_sdpa)
        assert torch.equal(got, expected)
        assert len({id(m) for m in masks_seen}) == 1 and masks_seen[0].dtype == torch.float32
    assert attention.additive_mask(None, torch.float32) is None
