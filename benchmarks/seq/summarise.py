"""Print the Markdown tables of a benchmarks/seq/run.sh output folder: mean ± std over seeds.

Usage: python benchmarks/seq/summarise.py OUT
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ARMS = [
    ("seq-JEPA", "seq-jepa-cpu"),
    ("seq-JEPA without actions", "seq-jepa-no-actions-cpu"),
    ("random init (seq-JEPA shape)", "random-init"),
    ("I-JEPA (`image/ijepa-cpu`)", "ijepa-cpu"),
]
SEQ_KEYS = [
    ("top1_views1", "top-1, M_val 1", 100),
    ("top1_views3", "top-1, M_val 3", 100),
    ("top1_views5", "top-1, M_val 5", 100),
    ("relative_r2", "relative R²", 1),
    ("relative_r2_rotation", "rel. R² rotation", 1),
    ("relative_r2_crop", "rel. R² crop", 1),
    ("relative_r2_color", "rel. R² colour", 1),
    ("individual_r2", "individual R²", 1),
]


def runs(out: Path, arm: str) -> list[dict]:
    return [
        json.loads(path.read_text())["results"]
        for path in sorted(out.glob(f"{arm}-s*.json"))
        if path.stat().st_size  # a probe still running has written nothing yet
    ]


def cell(values: list[float], scale: float) -> str:
    if not values:
        return "-"
    values = [scale * v for v in values]
    digits = 1 if scale == 100 else 3
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f} (n={len(values)})"


def pretrain_seconds(out: Path, arm: str) -> str:
    times = [float(p.read_text().split()[0]) for p in sorted(out.glob(f"{arm}-s*.time"))]
    return f"{statistics.mean(times) / 60:.0f} min" if times else "-"


def main(out: Path) -> None:
    print("| arm | " + " | ".join(label for _, label, _ in SEQ_KEYS) + " | pretrain |")
    print("|---" * (len(SEQ_KEYS) + 2) + "|")
    for label, arm in ARMS:
        results = runs(out, arm)
        if not results:
            continue
        if arm == "ijepa-cpu":  # the generic probe: linear on the pooled encoder (one view)
            row = [cell([r["linear_accuracy"] for r in results], 100)] + ["-"] * 7
        else:
            row = [cell([r[key] for r in results if key in r], scale) for key, _, scale in SEQ_KEYS]
        print(f"| {label} | " + " | ".join(row) + f" | {pretrain_seconds(out, arm)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
