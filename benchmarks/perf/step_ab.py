"""A/B of a candidate change on the peer benchmark's whole jepactl training step.

A kernel that wins in isolation can lose in the step (other work evicts its cache, autocast
re-casts weights that need no grad, ...), so candidates are judged here. Builds the jepactl step
of ``peer_lightly.py`` once, then times single steps alternately as jepactl runs them (A) and
with the candidate switched in (B), in the order A, B, B, A, ... in one process, so the two
share the model, the optimizer state and the machine's slow phases. Prints the fastest and
median step of each and the median per-pair ratio A / B (above 1: the candidate is faster).

Candidates:

- ``batch-chunks``: the target encoder's no-grad forward depth-first over chunks of
  ``--chunk`` samples (``target_forward.py --compare batch-chunks`` in isolation).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/perf/step_ab.py --candidate batch-chunks \\
        --chunk 4 --config tiny64 --precision fp32 --pairs 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import peer_lightly  # noqa: E402 - the benchmark's own step builder
import target_forward  # noqa: E402 - the same candidates, timed there on the encoder alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(peer_lightly.CONFIGS), default="tiny64")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--candidate", choices=["batch-chunks"], required=True)
    parser.add_argument("--chunk", type=int, default=4, help="samples per chunk (batch-chunks)")
    parser.add_argument("--pairs", type=int, default=12)
    args = parser.parse_args()
    as_is, candidate = target_forward.variants(args.candidate, args.chunk)
    step = peer_lightly.jepactl_runner(peer_lightly.CONFIGS[args.config], args.precision, 0,
                                       "truncate", True)
    for _ in range(2):  # warm-up, each setting once
        as_is(), step()
        candidate(), step()
    times: dict[str, list[float]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        order = ("A", "B") if pair % 2 == 0 else ("B", "A")
        for side in order:
            (as_is if side == "A" else candidate)()
            start = time.perf_counter()
            step()
            times[side].append(time.perf_counter() - start)
    as_is()
    ratios = [a / b for a, b in zip(times["A"], times["B"])]
    print(json.dumps({
        "config": args.config, "precision": args.precision, "threads": torch.get_num_threads(),
        "candidate": args.candidate,
        **({"chunk": args.chunk} if args.candidate == "batch-chunks" else {}),
        "pairs": args.pairs,
        "A_fastest_ms": round(min(times["A"]) * 1e3, 1),
        "B_fastest_ms": round(min(times["B"]) * 1e3, 1),
        "A_median_ms": round(statistics.median(times["A"]) * 1e3, 1),
        "B_median_ms": round(statistics.median(times["B"]) * 1e3, 1),
        "median_ratio_A_over_B": round(statistics.median(ratios), 3)}))


if __name__ == "__main__":
    main()
