"""A boolean attention mask converted once per block stack vs once per block (SDPA's own).

Six predictor blocks at the tiny64 peer shape (width 96, 3 heads, 32 sequences of 250 tokens,
a (32, 1, 250, 250) boolean mask), forward + backward, alternating the two ways 12 times and
reporting the median of the last 10; also the largest output difference (expected 0).

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/perf/mask_conversion.py --precision fp32

``--smoke`` runs the same code on two blocks of a tiny shape, three runs (a few seconds; for the
tests; its times mean nothing).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from jepactl.nn.vit import make_blocks, run_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="two blocks of a tiny shape, three runs: checks the script runs",
    )
    args = parser.parse_args()
    # width, depth, heads, sequences, tokens, context keys
    width, depth, heads, batch, tokens, context = (
        (16, 2, 2, 2, 24, 8) if args.smoke else (96, 6, 3, 32, 250, 100)
    )
    if args.smoke:
        args.runs = 3
    torch.manual_seed(0)
    blocks = make_blocks(width, depth, heads, 4.0, True, True, 0.0, 1e-6)
    x = torch.randn(batch, tokens, width, requires_grad=True)
    mask = torch.rand(batch, 1, tokens, tokens) > 0.3
    mask[..., :context] = True  # the context keys every query sees

    def per_block():  # SDPA converts the boolean mask in every block
        y = x
        for block in blocks:
            y = block(y, attn_mask=mask)
        return y

    def per_stack():  # jepactl: converted once by run_blocks
        return run_blocks(blocks, x, mask, False)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with autocast, torch.no_grad():
        difference = (per_block().float() - per_stack().float()).abs().max().item()
    times = {"per block": [], "per stack": []}
    for _ in range(args.runs):
        for name, run in (("per block", per_block), ("per stack", per_stack)):
            start = time.perf_counter()
            with autocast:
                out = run()
            out.float().sum().backward()
            times[name].append(time.perf_counter() - start)
    print(f"{args.precision}: max output difference {difference}")
    for name, values in times.items():
        print(f"  conversion {name}: {statistics.median(values[2:]) * 1e3:.1f} ms fwd+bwd")


if __name__ == "__main__":
    main()
