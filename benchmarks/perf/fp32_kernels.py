"""Are there faster fp32 CPU kernels for the peer benchmark's attention and linear layers?

jepactl's fp32 I-JEPA step is mostly matmuls and attention (benchmarks/perf/RESULTS.md, per-op
profiles). This script times the alternatives to the kernels jepactl uses, at the shapes of the
tiny64 step (ViT-Tiny, 64 px, patch 4, batch 32: target encoder 256 tokens, a context of 89,
a shared-context predictor of 89 + 4 x 40 tokens at width 96), so a candidate is measured before
anyone writes it into the model:

* attention (``--part attention``): ``scaled_dot_product_attention`` (PyTorch picks its CPU
  flash kernel), the same call forced onto the math kernel, attention written as matmul ->
  softmax -> matmul, for the no-grad target encoder that form one sample at a time into
  reused buffers, and for the predictor the split form (context queries on context keys, then
  each block's queries on [context; own block] keys) that skips the masked half of the
  block-diagonal mask. Forward + backward where the step trains, forward only for the target.
* linear layers (``--part linear``): ``F.linear`` (addmm: the bias is copied into the output,
  then the GEMM accumulates onto it), the GEMM alone without the bias (a lower bound), the GEMM
  then an in-place bias add, oneDNN's ``_linear_pointwise`` (bias in the GEMM's epilogue) and
  MKL's packed-weight linear, with and without re-packing (training changes the weights every
  step). Forward only, the training step's five large shapes.

Every variant runs once per round, round after round, in one process; the median of the rounds
after the first two is printed in ms, with each variant's ratio to jepactl's kernel
(>1 = faster than it). Each variant's result is checked against the reference first.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/perf/fp32_kernels.py --part attention
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from jepactl.nn.attention import additive_mask
from jepactl.nn.predictor import block_diagonal_mask

BATCH, HEADS = 32, 3
PREDICTOR = dict(context=89, blocks=4, per_block=40, head_dim=32)


def time_rounds(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median ms per variant over ``rounds`` alternated rounds (the first two discarded)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[2:]) * 1e3 for name, t in times.items()}


def explicit_attention(q, k, v, mask=None):
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if mask is not None:
        scores = scores + mask
    return scores.softmax(-1) @ v


def math_attention(q, k, v, mask=None):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def per_sample_attention(q, k, v, scores, out):
    """No-grad attention one sample at a time: the (heads, N, N) scores stay in cache."""
    for b in range(q.shape[0]):
        torch.baddbmm(scores, q[b], k[b].transpose(-1, -2), beta=0, alpha=q.shape[-1] ** -0.5,
                      out=scores)
        torch.softmax(scores, -1, out=scores)
        torch.bmm(scores, v[b], out=out[b])
    return out


def split_predictor_attention(q, k, v, context: int, blocks: int, per_block: int):
    """Block-diagonal predictor attention without the masked half: context queries see the
    context; each block's queries see [context; own block]. Equal to the masked call."""
    b, h, _, d = q.shape

    def by_block(t):  # (B, H, M*T, D) -> (B*M, H, T, D)
        return t.reshape(b, h, blocks, per_block, d).transpose(1, 2).reshape(-1, h, per_block, d)

    def context_per_block(t):  # (B, H, K, D) -> (B*M, H, K, D)
        return t.unsqueeze(1).expand(b, blocks, h, context, d).reshape(-1, h, context, d)

    kc, vc = k[:, :, :context], v[:, :, :context]
    out_context = F.scaled_dot_product_attention(q[:, :, :context], kc, vc)
    keys = torch.cat([context_per_block(kc), by_block(k[:, :, context:])], 2)
    values = torch.cat([context_per_block(vc), by_block(v[:, :, context:])], 2)
    out_blocks = F.scaled_dot_product_attention(by_block(q[:, :, context:]), keys, values)
    out_blocks = out_blocks.reshape(b, blocks, h, per_block, d).transpose(1, 2)
    return torch.cat([out_context, out_blocks.reshape(b, h, blocks * per_block, d)], 2)


def predictor_mask(context: int, blocks: int, per_block: int) -> torch.Tensor:
    """The shared-context predictor's mask, in the additive form run_blocks hands to SDPA."""
    allowed = block_diagonal_mask(context, blocks, per_block)
    n = allowed.shape[0]
    return additive_mask(allowed.expand(BATCH, 1, n, n), torch.float32)


def qkv(tokens: int, head_dim: int, grad: bool):
    # Laid out as timm's attention makes them: views of one (B, N, 3, H, D) projection.
    x = torch.randn(BATCH, tokens, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)
    return [t.detach().requires_grad_(grad) for t in x.unbind(0)]


def training_call(fn, q, k, v):
    def run():
        fn(q, k, v).sum().backward()
    return run


def attention_cases(rounds: int) -> dict:
    results = {}
    q, k, v = qkv(256, 64, grad=False)
    scores, out = torch.empty(HEADS, 256, 256), torch.empty(BATCH, HEADS, 256, 64)
    reference = sdpa(q, k, v)
    assert torch.allclose(per_sample_attention(q, k, v, scores, out), reference, atol=1e-5)
    with torch.no_grad():
        results["target encoder, 256 tokens, forward"] = time_rounds({
            "sdpa": lambda: sdpa(q, k, v), "math": lambda: math_attention(q, k, v),
            "explicit": lambda: explicit_attention(q, k, v),
            "per-sample": lambda: per_sample_attention(q, k, v, scores, out)}, rounds)
    q, k, v = qkv(89, 64, grad=True)
    results["context encoder, 89 tokens, forward + backward"] = time_rounds({
        "sdpa": training_call(sdpa, q, k, v), "math": training_call(math_attention, q, k, v),
        "explicit": training_call(explicit_attention, q, k, v)}, rounds)
    p = PREDICTOR
    n = p["context"] + p["blocks"] * p["per_block"]
    q, k, v = qkv(n, p["head_dim"], grad=True)
    mask = predictor_mask(p["context"], p["blocks"], p["per_block"])

    def split(q, k, v):
        return split_predictor_attention(q, k, v, p["context"], p["blocks"], p["per_block"])

    with torch.no_grad():
        assert torch.allclose(split(q, k, v), sdpa(q, k, v, mask), atol=1e-5)
    results[f"predictor, {n} tokens, block-diagonal mask, forward + backward"] = time_rounds({
        "sdpa": training_call(lambda *t: sdpa(*t, mask), q, k, v),
        "math": training_call(lambda *t: math_attention(*t, mask), q, k, v),
        "explicit": training_call(lambda *t: explicit_attention(*t, mask), q, k, v),
        "split": training_call(split, q, k, v)}, rounds)
    return results


def linear_cases(rounds: int) -> dict:
    results = {}
    tokens = BATCH * 256
    for rows, fan_in, fan_out, what in [(tokens, 192, 576, "qkv"), (tokens, 192, 768, "fc1"),
                                        (tokens, 768, 192, "fc2"), (tokens, 192, 192, "proj"),
                                        (BATCH * 249, 96, 384, "predictor fc1")]:
        x, w, b = torch.randn(rows, fan_in), torch.randn(fan_out, fan_in), torch.randn(fan_out)
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
        reference = F.linear(x, w, b)
        variants = {
            "F.linear": lambda: F.linear(x, w, b),
            "GEMM, no bias": lambda: torch.mm(x, w.t()),
            "GEMM + bias add_": lambda: torch.mm(x, w.t()).add_(b),
            "oneDNN epilogue": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
            "MKL packed": lambda: torch.ops.mkl._mkl_linear(x, packed, w, b, rows),
            "MKL re-packed": lambda: torch.ops.mkl._mkl_linear(
                x, torch.ops.mkl._mkl_reorder_linear_weight(w, rows), w, b, rows),
        }
        for name in ("GEMM + bias add_", "oneDNN epilogue", "MKL packed"):
            assert torch.allclose(variants[name](), reference, rtol=1e-4, atol=1e-3), name
        with torch.no_grad():
            results[f"{what} ({rows} x {fan_in} -> {fan_out})"] = time_rounds(variants, rounds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["attention", "linear"], default="attention")
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    cases = attention_cases(args.rounds) if args.part == "attention" else linear_cases(args.rounds)
    baseline = "sdpa" if args.part == "attention" else "F.linear"
    if args.json:
        print(json.dumps({"part": args.part, "threads": torch.get_num_threads(),
                          "rounds": args.rounds, "median_ms": cases}))
        return
    for case, medians in cases.items():
        print(case)
        for name, ms in medians.items():
            print(f"  {name:18s} {ms:8.2f} ms  {medians[baseline] / ms:5.2f}x")


if __name__ == "__main__":
    main()
