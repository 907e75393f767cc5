"""Print a markdown table of beat metrics from `jepactl probe --json` reports.

.venv/bin/python benchmarks/ecg/table.py runs/ecg-mitdb/probe-jepa.json ...
"""

from __future__ import annotations

import json
import sys

CLASSES = ["N", "S", "V", "F", "Q"]


def rows(path: str):
    report = json.load(open(path))
    for head in report["heads"].split(","):
        cells = [
            f"{report.get(f'{head}_sens_{c}', float('nan')):.3f} / "
            f"{report.get(f'{head}_ppv_{c}', float('nan')):.3f}"
            for c in CLASSES
        ]
        yield (
            f"| {report['encoder']} | {head} | "
            + " | ".join(cells)
            + f" | {report[f'{head}_macro_f1']:.3f} | {report[f'{head}_balanced_accuracy']:.3f} |"
        )


if __name__ == "__main__":
    print(
        "| encoder | head | "
        + " | ".join(f"{c} sens / PPV" for c in CLASSES)
        + " | macro-F1 | balanced acc. |"
    )
    print("|---|---|" + "---|" * (len(CLASSES) + 2))
    for file in sys.argv[1:]:
        for line in rows(file):
            print(line)
