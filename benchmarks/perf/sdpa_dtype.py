"""Which precision should scaled_dot_product_attention run in on this machine's CPU?

Times forward + backward of SDPA for the attention shapes of jepactl's CPU recipes, in fp32 and
bf16, with PyTorch's flash and math kernels, and the path jepactl takes under bf16 autocast
(upcast to fp32, flash kernel; ``jepactl.nn.attention``). Median of ``--repeats`` after one
warm-up call. Usage::

    python benchmarks/perf/sdpa_dtype.py --repeats 5 [--json]

``--smoke`` runs the same code on one tiny shape with one repeat (a few seconds; for the tests).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from jepactl.nn.attention import scaled_dot_product_attention

SHAPES = {  # name: batch, heads, tokens, head dim
    "tabular/cpu (Adult)": (512, 2, 15, 32),
    "image/tiny context": (64, 3, 64, 64),
    "ViT-S/16 224 px": (32, 6, 196, 64),
}
SMOKE_SHAPES = {"smoke": (2, 2, 16, 8)}


def time_call(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def case(shape: tuple[int, ...], dtype: torch.dtype, kernel: str, repeats: int) -> float:
    q, k, v = (torch.randn(*shape, dtype=dtype, requires_grad=True) for _ in range(3))

    def run() -> None:
        if kernel == "jepactl":
            out = scaled_dot_product_attention(q, k, v)
        else:
            backend = SDPBackend.FLASH_ATTENTION if kernel == "flash" else SDPBackend.MATH
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(q, k, v)
        out.float().sum().backward()

    return time_call(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one tiny shape, one repeat: checks the script runs, measures nothing",
    )
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
    rows = []
    for name, shape in (SMOKE_SHAPES if args.smoke else SHAPES).items():
        row = {"shape": name, "b_h_n_d": list(shape), "threads": torch.get_num_threads()}
        for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            for kernel in ("flash", "math"):
                row[f"{label}_{kernel}_ms"] = round(case(shape, dtype, kernel, args.repeats), 1)
        row["bf16_jepactl_ms"] = round(case(shape, torch.bfloat16, "jepactl", args.repeats), 1)
        rows.append(row)
        if not args.json:
            print(json.dumps(row), flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
