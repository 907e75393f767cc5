"""MIT-BIH DS1 -> DS2 over seeds (issue 23) from benchmarks/curves/ecg_seeds.sh's probe JSONs:
balanced accuracy and macro-F1 of the linear and attentive probes, pretrained encoder against
each seed's own untrained encoder, as mean ± sample std and the per-seed paired differences.
Markdown on stdout.

Usage: .venv/bin/python benchmarks/curves/ecg_summary.py OUT_DIR
"""

import json
import re
import statistics
import sys
from pathlib import Path

HEADS = ("linear", "attentive")
METRICS = ("balanced_accuracy", "macro_f1")
NAME = re.compile(r"s(\d+)(-init)?\.probe\.json")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0.0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def load(out: Path) -> dict[str, dict[int, dict]]:
    """{"pretrained" | "init": {seed: results}} for every non-empty probe JSON."""
    found: dict[str, dict[int, dict]] = {"pretrained": {}, "init": {}}
    for path in sorted(out.glob("s*.probe.json")):
        match = NAME.fullmatch(path.name)
        if not match or not path.stat().st_size:
            continue
        data = json.loads(path.read_text())
        found["init" if match[2] else "pretrained"][int(match[1])] = data.get("results", data)
    return found


def main(out: Path) -> None:
    found = load(out)
    seeds = sorted(set(found["pretrained"]) & set(found["init"]))
    print(f"seeds {seeds}; mean ± sample std; paired = pretrained - the same seed's init\n")
    print("| head | metric | pretrained | untrained (same seed) | paired difference | per seed |")
    print("|---|---|---|---|---|---|")
    for head in HEADS:
        for metric in METRICS:
            key = f"{head}_{metric}"
            pre = [found["pretrained"][s][key] for s in seeds]
            init = [found["init"][s][key] for s in seeds]
            diff = [a - b for a, b in zip(pre, init)]
            per_seed = ", ".join(f"{d:+.3f}" for d in diff)
            print(f"| {head} | {metric} | {fmt(pre)} | {fmt(init)} | {fmt(diff)} | {per_seed} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
