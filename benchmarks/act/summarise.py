"""Print benchmarks/act/RESULTS.md's table from run.sh's JSON outputs.

    python benchmarks/act/summarise.py OUT [state|image]

Mean ± std over the seeds found (per seed in brackets).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path


def spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    each = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({each})"


def rows(out: Path, name: str) -> list[dict]:
    found = []
    for path in sorted(out.glob(f"{name}-s*.json")):
        if re.search(rf"^{re.escape(name)}-s\d+\.json$", path.name):
            try:
                found.append(json.loads(path.read_text())["results"])
            except (ValueError, KeyError):
                continue
    return found


def main(out: Path, obs: str) -> None:
    print("| policy | success | mean coverage | max coverage | future-state MSE |")
    print("|---|---|---|---|---|")
    arms = [
        ("ACT-JEPA (lambda 1)", f"act-jepa-{obs}-cpu"),
        ("ACT alone (lambda 0)", f"act-jepa-{obs}-act-only-cpu"),
        ("nearest demonstration", "nearest_demo"),
        ("random targets", "random"),
        ("random init (future-state probe)", f"random-init-{obs}"),
    ]
    for label, name in arms:
        found = rows(out, name)
        if not found:
            continue
        success = [r["success_rate"] for r in found if "success_rate" in r]
        coverage = [r["coverage_mean"] for r in found if "coverage_mean" in r]
        peak = [r["coverage_max"] for r in found if "coverage_max" in r]
        mse = [r["future_state_mse"] for r in found if "future_state_mse" in r]
        print(
            f"| {label} | {spread(success)} | {spread(coverage)} | {spread(peak)} | "
            f"{spread(mse) if name not in ('nearest_demo', 'random') else '-'} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "state")
