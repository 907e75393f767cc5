"""Print benchmarks/lidar/RESULTS.md's tables from run.sh's JSON outputs.

    python benchmarks/lidar/summarise.py OUT

Balanced accuracy over seeds as mean ± std (per seed in brackets); cost from `jepactl bench`.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

ARMS = [
    ("AD-L-JEPA (target encoder)", "ad-l-jepa-objects-s{}"),
    ("AD-L-JEPA (context encoder)", "ad-l-jepa-objects-context-s{}"),
    ("occupancy reconstruction", "occupancy-mae-objects-s{}"),
    ("random init, same encoder", "random-init-objects-s{}"),
    ("raw pillar grid (8 x 8 pooled)", "pillars-s{}"),
    ("hand-made shape + height features", "handcrafted-s{}"),
    ("AD-L-JEPA on KITTI scans -> DALES", "ad-l-jepa-kitti-to-dales-s{}"),
    ("occupancy on KITTI scans -> DALES", "occupancy-mae-kitti-to-dales-s{}"),
    ("random init -> DALES (KITTI placement)", "random-init-kitti-to-dales-s{}"),
]


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    each = ", ".join(f"{v:.3f}" for v in values)
    return f"{mean:.3f} ± {std:.3f} ({each})"


def results(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())["results"]
    except (OSError, ValueError, KeyError):
        return None


def quality(out: Path) -> None:
    print("| features | linear balanced acc. | kNN balanced acc. |")
    print("|---|---|---|")
    for label, pattern in ARMS:
        seeds = sorted(
            int(m.group(1))
            for p in out.glob(pattern.format("*") + ".json")
            if (m := re.search(r"-s(\d+)\.json$", p.name))
        )
        rows = [results(out / (pattern.format(s) + ".json")) for s in seeds]
        rows = [r for r in rows if r]
        if not rows:
            continue
        linear = [r["linear_balanced_accuracy"] for r in rows]
        knn = [r["knn_balanced_accuracy"] for r in rows]
        print(f"| {label} | {spread(linear)} | {spread(knn)} |")


def cost(out: Path) -> None:
    print("| setting | arm | batch | step s | samples/s | step memory MB | per sample MB |")
    print("|---|---|---|---|---|---|")
    for setting in ("cpu", "paper-grid"):
        for arm in ("ad-l-jepa", "occupancy-mae"):
            path = out / f"cost-{arm}-{setting}.json"
            r = results(path)
            if not r:
                continue
            batch = r["batch_size"]
            print(
                f"| {setting} | {arm} | {batch} | {r['step_time_s']:.3f} | "
                f"{r['samples_per_s']:.1f} | {r['step_memory_mb']:.0f} | "
                f"{r['step_memory_mb'] / batch:.0f} |"
            )


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    quality(folder)
    print()
    cost(folder)
