"""Learning-curve table (issue 23) from the run folders benchmarks/curves/curve.sh writes: per
pretraining step, the online probe's linear and kNN accuracy and RankMe as mean ± sample std
over the seeds (step 0 = each seed's encoder before its first step, from the run's baselines),
and the raw-input row. Markdown on stdout.

Usage: .venv/bin/python benchmarks/curves/summary.py OUT_DIR
"""

import json
import statistics
import sys
from pathlib import Path

KEYS = ("linear_accuracy", "knn_accuracy", "rankme")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0.0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float], key: str) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    if key == "rankme":
        return f"{mean:.1f} ± {std:.1f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def curves(out: Path) -> tuple[dict[int, dict[str, list[float]]], dict[str, list[float]], int]:
    """Return ({step: {key: values over seeds}}, {key: raw-input values}, number of seeds)."""
    steps: dict[int, dict[str, list[float]]] = {}
    raw: dict[str, list[float]] = {}
    # runs with an online probe (the 1-step initial-weight runs of ecg_seeds.sh have none)
    runs = sorted(p for p in out.glob("s*") if (p / "online_probe.json").is_file())
    for run in runs:
        described = json.loads((run / "online_probe.json").read_text())
        baselines = described.get("baselines", {})
        for key in KEYS:
            if key in baselines.get("step_0", {}):
                steps.setdefault(0, {}).setdefault(key, []).append(baselines["step_0"][key])
            if key in baselines.get("raw_input", {}):
                raw.setdefault(key, []).append(baselines["raw_input"][key])
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a torn last line
                continue
            for key in KEYS:
                if f"online_{key}" in record:
                    bucket = steps.setdefault(record["step"], {})
                    bucket.setdefault(key, []).append(record[f"online_{key}"])
    return steps, raw, len(runs)


def main(out: Path) -> None:
    steps, raw, seeds = curves(out)
    print(f"{seeds} seeds; accuracy in %, mean ± sample std over seeds\n")
    print("| pretraining steps | seeds | linear | kNN | RankMe |")
    print("|---|---|---|---|---|")
    for step in sorted(steps):
        row = steps[step]
        count = max(len(v) for v in row.values())
        name = "0 (random init)" if step == 0 else str(step)
        print(f"| {name} | {count} | " + " | ".join(cell(row.get(k, []), k) for k in KEYS) + " |")
    if raw:
        print("| raw input | - | " + " | ".join(cell(raw.get(k, []), k) for k in KEYS) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
