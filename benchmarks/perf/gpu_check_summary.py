"""Collect the figures of one ``gpu_check.sh`` run into one JSON document (printed).

Reads the stage folders the script wrote: ``device.txt``, each ``<stage>.status.json``, the
pytest JUnit file, the bench JSON and, per pretraining run, its ``--json`` result,
``env.json`` (precision, micro-batch plan, first step's peak) and ``metrics.jsonl``
(steady-state samples/s: the median of the logged windows after the first).
"""

from __future__ import annotations

import json
import statistics
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def last_json_document(path: Path):
    """The last JSON object printed on stdout (a command may print other lines before it)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start = text.rfind("\n{")
    for candidate in (text[start + 1 :] if start >= 0 else None, text):
        if candidate:
            try:
                return json.loads(candidate)
            except ValueError:
                continue
    return None


def error_line(out: Path, stage: str) -> str | None:
    try:
        lines = [x for x in (out / f"{stage}.err").read_text().splitlines() if x.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


def test_counts(out: Path) -> dict | None:
    try:
        root = ET.parse(out / "tests.xml").getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0))
    errors, skipped = int(suite.get("errors", 0)), int(suite.get("skipped", 0))
    return {
        "passed": total - failed - errors - skipped,
        "failed": failed + errors,
        "skipped": skipped,
    }


def run_figures(run: Path) -> dict:
    env = read_json(run / "env.json") or {}
    records = []
    try:
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        pass
    rates = [r["samples_per_s"] for r in records[1:] if "samples_per_s" in r]
    micro = env.get("micro_batch") or {}
    return {
        "steps": records[-1]["step"] if records else 0,
        "final_loss": records[-1].get("loss") if records else None,
        "samples_per_s": statistics.median(rates) if rates else None,
        "precision": env.get("precision"),
        "world_size": env.get("world_size"),
        "global_batch_size": env.get("global_batch_size"),
        "micro_batch": micro.get("micro_batch_size"),
        "accumulation": micro.get("accumulation"),
        "first_step_peak_gib": micro.get("first_step_peak_gib"),
    }


def main(out: Path) -> dict:
    summary = {"device": (out / "device.txt").read_text().strip().splitlines()}
    for stage in ("tests", "bench", "two_processes", "ecg", "image"):
        status = read_json(out / f"{stage}.status.json") or {"rc": None, "skipped": "not run"}
        if status.get("rc") not in (0, None):
            status["error"] = error_line(out, stage)
        summary[stage] = status
    summary["tests"]["counts"] = test_counts(out)
    bench = (last_json_document(out / "bench.out") or {}).get("results", {})
    keys = ("samples_per_s", "step_ms", "mfu", "mfu_vs_spec", "device", "precision")
    summary["bench"].update({k: bench[k] for k in keys if k in bench})
    for stage, folder in (("two_processes", "two-processes"), ("ecg", "ecg"), ("image", "image")):
        summary[stage].update(run_figures(out / folder))
    return summary


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=2))
