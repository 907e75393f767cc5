"""Learning curve of T-JEPA on Adult (issue 23) from the probe JSONs benchmarks/tabular/curve.sh
writes: a Markdown table (mean ± sample std over seeds per pretraining step, random init and raw
features) and a PNG of probe accuracy against pretraining steps.

Usage: .venv/bin/python benchmarks/tabular/curve.py OUT_DIR [PNG]
"""

import json
import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEADS = ("linear", "mlp")
METRICS = ("accuracy", "roc_auc")
NAME = re.compile(r"adult-s(\d+)-step(\d+)\.probe\.json")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1, as jepactl's probe reports; 0.0 for one value)."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def load(out: Path) -> dict[int, dict[int, dict]]:
    """Return {step: {seed: probe results}}; step 0 is the --random-init probe."""
    runs: dict[int, dict[int, dict]] = {}
    for path in sorted(out.glob("adult-s*-step*.probe.json")):
        match = NAME.fullmatch(path.name)
        if not match or path.stat().st_size == 0:
            continue
        seed, step = int(match[1]), int(match[2])
        data = json.loads(path.read_text())
        runs.setdefault(step, {})[seed] = data.get("results", data)
    return runs


def load_init(out: Path) -> dict[int, dict]:
    """Return {seed: probe results} of the 1-step lr-0 runs (each seed's initial weights)."""
    init = {}
    for path in sorted(out.glob("adult-s*-init.probe.json")):
        if path.stat().st_size:
            data = json.loads(path.read_text())
            init[int(path.name.split("-")[1][1:])] = data.get("results", data)
    return init


def monitors(out: Path, step: int, seeds: list[int]) -> tuple[list[float], list[float], int]:
    """Pretraining loss and embed_std of each seed's metrics.jsonl at the logged step nearest
    ``step`` (logged every train.log_every steps), and that step."""
    loss, std, near = [], [], step
    for seed in seeds:
        log = out / f"adult-s{seed}" / "metrics.jsonl"
        if not log.is_file():
            continue
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        row = min(rows, key=lambda r: abs(r["step"] - step))
        near = row["step"]
        loss.append(row["loss"])
        std.append(row.get("embed_std", float("nan")))
    return loss, std, near


def main() -> None:
    out = Path(sys.argv[1])
    png = Path(sys.argv[2]) if len(sys.argv) > 2 else out / "adult-curve.png"
    runs = load(out)
    init = load_init(out)
    if 0 not in runs:
        sys.exit(f"no random-init probes (adult-s*-step0.probe.json) under {out}")
    steps = sorted(s for s in runs if s > 0)
    seeds = sorted(runs[0])
    # Raw features depend on the probe seed only: one value per seed, from the step-0 probe.
    raw = {(h, m): [runs[0][s][f"{h}_{m}_raw"] for s in seeds] for h in HEADS for m in METRICS}
    col = {(h, m): f"{h}_{m}_tjepa" for h in HEADS for m in METRICS}

    header = "| input | seeds | linear acc | linear AUC | MLP acc | MLP AUC | loss | embed_std |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    cells = " | ".join(fmt(raw[h, m]) for h in HEADS for m in METRICS)
    print(f"| raw features | {len(seeds)} | {cells} | | |")
    rows = [(runs[0], "untrained, `--random-init` (torch seed 0 for every seed)", 0)]
    if init:
        rows.append((init, "untrained, each seed's own init (1-step run at lr 0)", 0))
    rows += [(runs[s], f"T-JEPA, {s:,} steps", s) for s in steps]
    for probes, label, step in rows:
        got = sorted(probes)
        cells = " | ".join(fmt([probes[s][col[h, m]] for s in got]) for h in HEADS for m in METRICS)
        loss, std, near = monitors(out, step, got) if step else ([], [], 0)
        mon = f"{fmt(loss)} | {fmt(std)}" if loss else " | "
        if loss and near != step:
            label += f" (monitors at step {near})"
        print(f"| {label} | {len(got)} | {cells} | {mon} |")

    # Paired differences to the untrained encoder (same probe seed: same validation split, same
    # head init and batch order), in accuracy points.
    print()
    controls = [("`--random-init`", runs[0])] + ([("own init", init)] if init else [])
    print("| step | control | linear acc minus control | MLP acc minus control |")
    print("|---|---|---|---|")
    for step in steps:
        for name, control in controls:
            diffs = []
            for h in HEADS:
                key = col[h, "accuracy"]
                both = [s for s in runs[step] if s in control]
                diffs.append(fmt([100 * (runs[step][s][key] - control[s][key]) for s in both]))
            print(f"| {step:,} | {name} | {diffs[0]} | {diffs[1]} |")
    print("(accuracy points, mean ± std over seeds of the per-seed difference)")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, head in zip(axes, HEADS):
        key = col[head, "accuracy"]
        means, stds = zip(*(mean_std([runs[s][x][key] for x in runs[s]]) for s in steps))
        ax.errorbar(steps, means, yerr=stds, marker="o", capsize=3, label="T-JEPA (target enc.)")
        lines = [("untrained, --random-init", [runs[0][s][key] for s in seeds], "tab:red")]
        if init:
            lines.append(("untrained, own seed", [r[key] for r in init.values()], "tab:orange"))
        lines.append(("raw features", raw[head, "accuracy"], "tab:gray"))
        for label, values, colour in lines:
            mean, std = mean_std(values)
            ax.axhline(mean, color=colour, linestyle="--", label=f"{label} {mean:.4f}")
            ax.axhspan(mean - std, mean + std, color=colour, alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(steps)
        ax.set_xticklabels([f"{s:,}" for s in steps])
        ax.minorticks_off()
        ax.set_xlabel("pretraining steps (batch 512; 63 steps = 1 epoch)")
        ax.set_ylabel("test accuracy (adult.test)")
        ax.set_title(
            f"Adult, {head.replace('mlp', 'MLP')} probe, mean ± std over {len(seeds)} seeds"
        )
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"\nwrote {png}", file=sys.stderr)


if __name__ == "__main__":
    main()
