"""Run the packaged linear recipes, time them, and print their critical-time tables as markdown.

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/linear/run_experiments.py [--out runs/linear]
        [--recipes jepa-vs-mae lambda-order rho-order jepa-vs-mae-samples]

Each recipe runs as `jepactl pretrain linear/NAME --out OUT/NAME --json --quiet`; wall time and
the child's CPU time (user + sys) are measured around it. The figure of linear/jepa-vs-mae is
copied to benchmarks/linear/jepa_vs_mae.png (the one the README links).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JEPACTL = Path(sys.executable).parent / "jepactl"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(name: str, out: Path) -> dict:
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    subprocess.run(
        [str(JEPACTL), "pretrain", f"linear/{name}", "--out", str(run_dir), "--json", "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    timing = {"wall_s": time.perf_counter() - wall0, "cpu_s": cpu_seconds() - cpu0}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"summary": summary, **timing, "run_dir": run_dir}


def markdown(name: str, result: dict) -> str:
    summary = result["summary"]
    a, b = summary["ratio_of"]
    depths = sorted({m["depth"] for m in summary["models"].values()})
    lines = [
        f"### linear/{name}: t*{a} / t*{b}  "
        f"(wall {result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s)",
        "",
        "| | " + " | ".join(f"L={d}" for d in depths) + " |",
        "|---|" + "---|" * len(depths),
    ]
    for objective in ("mae", "jepa"):
        rows = {m["depth"]: m for m in summary["models"].values() if m["objective"] == objective}
        if not rows:
            continue

        def cell(value):
            return "n/a" if value is None else f"{value:.3f}"

        lines.append(
            f"| {objective.upper()} gradient descent | "
            + " | ".join(cell(rows[d]["ratio"]) for d in depths)
            + " |"
        )
        if "ode_ratio" in rows[depths[0]]:
            lines.append(
                f"| {objective.upper()} gradient-flow ODE | "
                + " | ".join(cell(rows[d]["ode_ratio"]) for d in depths)
                + " |"
            )
    lines.append("")
    lines.append(
        "learning orders: " + "; ".join(f"{n}: {m['order']}" for n, m in summary["models"].items())
    )
    lines.append("")
    lines.append(
        "probe R² (z from the top component of W̄x): "
        + ", ".join(f"{n} {m['probe_r2']:.3f}" for n, m in summary["models"].items())
        + f"; raw input {summary['input_probe_r2']:.3f}"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "linear")
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=["jepa-vs-mae", "lambda-order", "rho-order", "jepa-vs-mae-samples"],
    )
    args = parser.parse_args()
    for name in args.recipes:
        result = run(name, args.out)
        print(markdown(name, result), flush=True)
        if name == "jepa-vs-mae":
            shutil.copy(
                result["run_dir"] / "weights_over_time.png",
                Path(__file__).resolve().parent / "jepa_vs_mae.png",
            )


if __name__ == "__main__":
    main()
