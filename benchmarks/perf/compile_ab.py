"""A/B of ``train.compile`` on the peer benchmark's jepactl training step: compiled blocks vs eager.

Builds the jepactl step of ``peer_lightly.py`` with ``train.compile=true`` (every transformer
block compiled in place, dynamic shapes), compiles it during three untimed steps, then times
single steps alternately with the compiled blocks switched on and off (A, B, B, A, ...) in the
same process, so the two share the model, the optimizer state and the machine's slow phases.
Prints the compile time, the fastest and median step of each, and the median per-pair ratio.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/perf/compile_ab.py --config tiny64 \\
        --precision fp32 --pairs 16

``--smoke`` runs one pair on ``peer_lightly.py``'s smoke configuration (a two-block ViT of
width 32 at 64 px; for the tests; its times mean nothing). It compiles with ``--backend
aot_eager`` (dynamo and the autograd graphs, no C++ code generation, which takes 40-80 s on one
cold core); pass ``--backend inductor`` to smoke-test what ``train.compile`` really runs.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from timm.models.vision_transformer import Block

sys.path.insert(0, str(Path(__file__).parent))
import peer_lightly  # noqa: E402 - the benchmark's own step builder

from jepactl.compile import is_compiled  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(peer_lightly.CONFIGS), default="tiny64")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument(
        "--blocks",
        choices=["all", "trainable"],
        default="all",
        help="trainable: leave the EMA target encoder's blocks eager (its no-grad "
        "forward then takes jepactl's in-place path)",
    )
    parser.add_argument(
        "--backend",
        default=None,
        help="torch.compile backend (default: inductor, as train.compile; aot_eager with --smoke)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny ViT, one pair: checks the script runs"
    )
    args = parser.parse_args()
    cfg = peer_lightly.CONFIGS[args.config]
    if args.smoke:
        cfg, args.config, args.pairs = peer_lightly.SMOKE, "smoke", 1
        args.backend = args.backend or "aot_eager"
    args.backend = args.backend or "inductor"
    if args.backend != "inductor":  # train.compile calls Module.compile(dynamic=True)
        torch.nn.Module.compile = functools.partialmethod(
            torch.nn.Module.compile, backend=args.backend
        )
    step = peer_lightly.jepactl_runner(
        cfg, args.precision, 0, "truncate", True, compile_blocks=True
    )
    # The runner keeps its model to itself; its compiled blocks are the only ones alive.
    built = [m for m in gc.get_objects() if isinstance(m, Block) and is_compiled(m)]
    if args.blocks == "trainable":
        for block in built:
            if not any(p.requires_grad for p in block.parameters()):
                block._compiled_call_impl = None  # back to eager for good
        built = [block for block in built if is_compiled(block)]
    compiled_calls = [block._compiled_call_impl for block in built]

    def use_compiled(on: bool) -> None:
        for block, call in zip(built, compiled_calls):
            block._compiled_call_impl = call if on else None

    start = time.perf_counter()
    for _ in range(3):  # compiles forward and backward graphs of every block shape
        step()
    compile_s = time.perf_counter() - start
    use_compiled(False)
    step()
    times: dict[bool, list[float]] = {False: [], True: []}
    for pair in range(args.pairs):
        for on in (False, True) if pair % 2 else (True, False):
            use_compiled(on)
            start = time.perf_counter()
            step()
            times[on].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times[False], times[True])]
    print(
        json.dumps(
            {
                "config": args.config,
                "precision": args.precision,
                "threads": torch.get_num_threads(),
                "backend": args.backend,
                "blocks": args.blocks,
                "compiled_blocks": len(built),
                "pairs": args.pairs,
                "compile_and_3_steps_s": round(compile_s, 1),
                "eager_ms": {
                    "fastest": round(min(times[False]) * 1e3),
                    "median": round(statistics.median(times[False]) * 1e3),
                },
                "compiled_ms": {
                    "fastest": round(min(times[True]) * 1e3),
                    "median": round(statistics.median(times[True]) * 1e3),
                },
                "median_ratio_eager_over_compiled": round(statistics.median(ratios), 3),
                "fastest_ratio": round(min(times[False]) / min(times[True]), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
