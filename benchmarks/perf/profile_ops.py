"""Where one side of the peer benchmark spends its step: per-op self time and matmul efficiency.

Builds the same jepactl or lightly training step as ``peer_lightly.py``, runs two untimed steps,
then profiles ``--steps`` steps with ``torch.profiler`` and prints: the ops with the most self
CPU time, the matmul (mm + addmm + addmm_) total with its FLOPs and GFLOP/s, and the rest of
the step.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/perf/profile_ops.py --side jepactl \\
        --config tiny64 --precision fp32

``--smoke`` profiles one step of ``peer_lightly.py``'s smoke configuration (a two-block ViT of
width 32 at 64 px; a few seconds, for the tests; its times mean nothing). ``--side lightly``
needs lightly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
import peer_lightly  # noqa: E402 - the benchmark's own step builders

# addmm_: the no-grad blocks accumulate projections into the residual stream in place.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_")


def matmul_flops(event) -> int:
    """FLOPs of one profiler row of aten::mm (a, b) or aten::addmm / addmm_ (bias, a, b)."""
    a, b = event.input_shapes[:2] if event.key == "aten::mm" else event.input_shapes[1:3]
    return 2 * a[0] * a[1] * b[1] * event.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["jepactl", "lightly"], default="jepactl")
    parser.add_argument("--config", choices=sorted(peer_lightly.CONFIGS), default="tiny64")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny ViT, one profiled step: checks the script runs"
    )
    args = parser.parse_args()
    cfg = peer_lightly.CONFIGS[args.config]
    if args.smoke:
        cfg, args.config, args.steps, args.top = peer_lightly.SMOKE, "smoke", 1, 5
    step = (
        peer_lightly.jepactl_runner(cfg, args.precision, 0, "truncate", True)
        if args.side == "jepactl"
        else peer_lightly.lightly_runner(cfg, args.precision, 0)
    )
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    by_op = prof.key_averages()
    total_ms = sum(e.self_cpu_time_total for e in by_op) / 1e3 / args.steps
    matmuls = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in MATMUL_OPS]
    matmul_ms = sum(e.self_cpu_time_total for e in matmuls) / 1e3 / args.steps
    gflop = sum(matmul_flops(e) for e in matmuls) / 1e9 / args.steps
    top = sorted(by_op, key=lambda e: -e.self_cpu_time_total)[: args.top]
    result = {
        "side": args.side,
        "config": args.config,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "step_ms": total_ms,
        "matmul_ms": matmul_ms,
        "matmul_gflop": gflop,
        "matmul_gflops_per_s": gflop / (matmul_ms / 1e3),
        "other_ms": total_ms - matmul_ms,
        "top_ops_ms": {e.key: e.self_cpu_time_total / 1e3 / args.steps for e in top},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.side} {args.config} {args.precision}, {result['threads']} thread(s), per step:")
    print(
        f"  step {total_ms:.0f} ms = matmul {matmul_ms:.0f} ms ({gflop:.1f} GFLOP, "
        f"{result['matmul_gflops_per_s']:.0f} GFLOP/s) + other {result['other_ms']:.0f} ms"
    )
    for name, ms in result["top_ops_ms"].items():
        print(f"  {ms:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
