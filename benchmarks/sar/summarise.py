"""Print the Markdown table of benchmarks/sar/out/*.json (written by benchmarks/sar/run.sh)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ARMS = [
    ("SAR-JEPA (gradient targets)", "cpu"),
    ("pixel targets (MAE-style)", "pixel-targets"),
    ("EMA-encoder targets (I-JEPA-style)", "ema-targets"),
    ("random-init encoder", "random-init"),
]


def cell(result: dict, key: str) -> str:
    """Mean ± std over seeds: jepactl >= 0.2 writes ``{"results": {key, key_std}}``, the stored
    outputs of 0.1 ``key_mean``/``key_std`` at the top level."""
    if "results" in result:
        result = {f"{k}_mean" if k == key else k: v for k, v in result["results"].items()}
    if f"{key}_mean" not in result:
        return "-"
    return f"{100 * result[f'{key}_mean']:.1f} ± {100 * result[f'{key}_std']:.1f}"


def main(out: Path) -> None:
    print(
        "| arm | linear, head 100 ep @ 1e-2 | kNN | linear, paper head 40 ep @ 1e-3 |"
        " final pretrain loss |"
    )
    print("|---|---|---|---|---|")
    for label, arm in ARMS:
        probe = out / f"probe-{arm}.json"
        if not probe.is_file():
            continue
        result = json.loads(probe.read_text())
        paper = out / f"probe-{arm}-paper-optim.json"
        paper_result = json.loads(paper.read_text()) if paper.is_file() else {}
        pre = out / f"pretrain-{arm}.json"
        pretrained = json.loads(pre.read_text()) if pre.is_file() else {}
        pretrained = pretrained.get("results", pretrained)
        loss = f"{pretrained['last_loss']:.4f}" if pretrained else "-"
        print(
            f"| {label} | {cell(result, 'linear_accuracy')} | {cell(result, 'knn_accuracy')} | "
            f"{cell(paper_result, 'linear_accuracy')} | {loss} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out")
