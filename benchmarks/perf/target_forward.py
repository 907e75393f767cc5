"""A/B of an encoder that sees every token: token layout and the in-place no-grad block path.

Two changes and one candidate are measured here, each against the code path it replaced or
would replace, alternating single runs (A, B, B, A, ...) in one process so that slow phases of
a shared machine hit both:

- ``--compare layout``: tokens from the patch embedding as a transposed view (the old code) vs
  contiguous (now), on a forward + backward with autograd (fine-tuning; without autograd the
  in-place path below makes its own contiguous copy). The transposed layout made every
  LayerNorm copy its input.
- ``--compare in-place``: the no-grad forward of the EMA target encoder (it sees every token on
  every I-JEPA step), timm's block forward vs ``jepactl.nn.no_grad_blocks`` (residual stream
  updated in place).
- ``--compare batch-chunks``: a candidate, not adopted (RESULTS.md 3c): the in-place target
  forward over the whole batch (now) vs depth-first over chunks of ``--chunk`` samples, so that
  one chunk's activations stay in the core's cache from one block to the next.

Prints the median and quartiles of the per-pair time ratio (old / new), the ratio of the
fastest runs, the median minor page faults per run of each path (``getrusage``: memory the
allocator gave back to the kernel and faulted in again) and the largest output difference.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/perf/target_forward.py --compare layout

``--smoke`` runs every comparison (or the one given) on a two-block encoder at 16 px with two
pairs (a few seconds; for the tests; its times mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import time

import torch

import jepactl.nn.vit as vit
from jepactl.nn.tokenizers import PatchEmbed2D
from jepactl.nn.vit import EncoderConfig, TransformerEncoder

CONFIGS = {  # the peer benchmark's two encoders
    "tiny64": dict(image=64, patch=4, dim=192, depth=12, heads=3, batch=32),
    "small224": dict(image=224, patch=16, dim=384, depth=12, heads=6, batch=16),
}
SMOKE = dict(image=16, patch=4, dim=32, depth=2, heads=2, batch=4)
COMPARES = ("layout", "in-place", "batch-chunks")


def transposed_tokens(self: PatchEmbed2D, x: torch.Tensor) -> torch.Tensor:
    return self.proj(x).flatten(2).transpose(1, 2)  # the layout before the fix


def module_blocks(blocks, x, attn_mask):
    for block in blocks:  # timm's forward, block by block
        x = block(x, attn_mask=attn_mask)
    return x


def batch_chunked(run_blocks, chunk: int):
    """``run_blocks`` applied to ``chunk`` samples at a time, all blocks per chunk."""

    def run(blocks, x, attn_mask):
        if attn_mask is not None:
            raise ValueError("batch-chunks compares full-token (target encoder) forwards only")
        return torch.cat([run_blocks(blocks, part, None) for part in x.split(chunk)])

    return run


def variants(compare: str, chunk: int):
    """Return (old, new) callables that switch the code path."""
    if compare == "batch-chunks":  # here "old" is what jepactl runs, "new" the candidate
        in_place = vit.run_blocks_in_place
        chunked = batch_chunked(in_place, chunk)
        return (
            lambda: setattr(vit, "run_blocks_in_place", in_place),
            lambda: setattr(vit, "run_blocks_in_place", chunked),
        )
    if compare == "layout":
        contiguous = PatchEmbed2D.forward
        return (
            lambda: setattr(PatchEmbed2D, "forward", transposed_tokens),
            lambda: setattr(PatchEmbed2D, "forward", contiguous),
        )
    in_place = vit.run_blocks_in_place
    return (
        lambda: setattr(vit, "run_blocks_in_place", module_blocks),
        lambda: setattr(vit, "run_blocks_in_place", in_place),
    )


@contextlib.contextmanager
def restored(current):
    """Switch back to jepactl's code path on exit (the next comparison patches it again)."""
    try:
        yield
    finally:
        current()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--compare",
        choices=COMPARES,
        help="required, except with --smoke (then every comparison by default)",
    )
    parser.add_argument("--chunk", type=int, default=4, help="samples per chunk (batch-chunks)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny64")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument(
        "--run-length",
        type=int,
        default=1,
        help="forwards of one path in a row per turn (page faults depend on "
        "what the allocator freed just before)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny encoder, two pairs: checks the script runs"
    )
    args = parser.parse_args()
    if args.compare is None and not args.smoke:
        parser.error("the following arguments are required: --compare")
    if args.smoke:
        args.pairs, args.run_length, args.chunk = 2, 1, 2
    for compare in [args.compare] if args.compare else COMPARES:
        measure(args, compare, SMOKE if args.smoke else CONFIGS[args.config])


def measure(args: argparse.Namespace, compare: str, cfg: dict) -> None:
    """Time the two code paths of ``compare`` on the encoder ``cfg``; print one JSON line."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(
        {"kind": "patch2d", "in_chans": 3, "img_size": cfg["image"]},
        EncoderConfig(
            embed_dim=cfg["dim"],
            depth=cfg["depth"],
            num_heads=cfg["heads"],
            patch_size=cfg["patch"],
        ),
    )
    encoder.train(compare == "layout")
    images = torch.randn(cfg["batch"], 3, cfg["image"], cfg["image"])
    autocast = (
        torch.autocast("cpu", torch.bfloat16)
        if args.precision == "bf16"
        else contextlib.nullcontext()
    )
    old, new = variants(compare, args.chunk)
    backward = compare == "layout"

    def run() -> torch.Tensor:
        out = encoder(images)
        if backward:
            out.float().square().mean().backward()
        return out.detach().float()

    times: dict[str, list[float]] = {"old": [], "new": []}
    faults: dict[str, list[int]] = {"old": [], "new": []}
    current = old if compare == "batch-chunks" else new  # the code path jepactl runs now
    with torch.set_grad_enabled(backward), autocast, restored(current):
        old()
        reference = run()
        new()
        difference = (run() - reference).abs().max().item()
        for _ in range(2):  # warm-up of both paths
            old(), run(), new(), run()
        for pair in range(args.pairs):
            order = (("old", old), ("new", new)) if pair % 2 else (("new", new), ("old", old))
            for name, switch in order:
                switch()
                for _ in range(args.run_length):
                    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
                    faults[name].append(
                        resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
                    )
    ratios = [a / b for a, b in zip(times["old"], times["new"])]
    quartiles = statistics.quantiles(ratios, n=4)
    print(
        json.dumps(
            {
                "compare": compare,
                "config": "smoke" if args.smoke else args.config,
                "precision": args.precision,
                "threads": torch.get_num_threads(),
                "pairs": args.pairs,
                "run_length": args.run_length,
                **({"chunk": args.chunk} if compare == "batch-chunks" else {}),
                "old_median_ms": round(statistics.median(times["old"]) * 1e3, 1),
                "new_median_ms": round(statistics.median(times["new"]) * 1e3, 1),
                "median_ratio": round(statistics.median(ratios), 3),
                "quartiles": [round(quartiles[0], 3), round(quartiles[2], 3)],
                "fastest_ratio": round(min(times["old"]) / min(times["new"]), 3),
                "old_page_faults": statistics.median(faults["old"]),
                "new_page_faults": statistics.median(faults["new"]),
                "max_abs_difference": difference,
            }
        )
    )


if __name__ == "__main__":
    main()
