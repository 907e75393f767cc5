"""Every kept benchmarks/perf script still runs: its ``--smoke`` mode, one subprocess each.

A smoke run takes the script's real code path on a tiny configuration (one pair or repeat) and
prints its normal output; the numbers mean nothing, the test only checks that the script exits
0 and prints one. ``peer_lightly.py`` and ``context_tokens.py`` need the optional ``lightly``
(``pip install -e .[bench]``):
without it the script says so in one line and exits 0, and the test is reported as skipped.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "benchmarks" / "perf"
SCRIPTS = [
    "sdpa_dtype.py",
    "mask_conversion.py",
    "target_forward.py",
    "profile_ops.py",
    "compile_ab.py",
    "peer_lightly.py",
    "context_tokens.py",
]
NEEDS_LIGHTLY = {"peer_lightly.py", "context_tokens.py"}
NUMBER = re.compile(r"\d+\.\d+")


def run_smoke(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(PERF / script), "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_perf_script_smoke_run_exits_0_and_prints_a_number(script):
    result = run_smoke(script)
    assert result.returncode == 0, result.stdout + result.stderr
    if script in NEEDS_LIGHTLY and importlib.util.find_spec("lightly") is None:
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1 and "lightly" in lines[0] and "skipped" in lines[0], result.stdout
        pytest.skip("lightly is not installed (pip install -e .[bench]); smoke skipped cleanly")
    assert NUMBER.search(result.stdout), result.stdout


def test_every_perf_script_has_a_smoke_run():
    scripts = {path.name for path in PERF.glob("*.py")} - {"gpu_check_summary.py"}
    assert scripts == set(SCRIPTS)
    for script in SCRIPTS:
        assert '"--smoke"' in (PERF / script).read_text(), script


def test_the_gpu_check_parses_and_its_summary_reads_every_stage(tmp_path):
    """gpu_check.sh needs a GPU (its --smoke run takes 2 minutes on CPU, too long for the
    suite): here its syntax, and the summary it writes from each stage's files."""
    import json

    sys.path.insert(0, str(PERF))
    from gpu_check_summary import main as summarise

    assert subprocess.run(["bash", "-n", str(PERF / "gpu_check.sh")]).returncode == 0
    (tmp_path / "device.txt").write_text("2.14.1\nNVIDIA H200\n")
    status = {"rc": 0, "seconds": 5, "limit_s": 60}
    for stage in ("tests", "bench", "ecg", "image"):
        (tmp_path / f"{stage}.status.json").write_text(json.dumps(status))
    (tmp_path / "two_processes.status.json").write_text(json.dumps({**status, "rc": 1}))
    (tmp_path / "two_processes.err").write_text("launching\nRuntimeError: invalid device ordinal\n")
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite tests="6" failures="1" errors="0" skipped="2"/></testsuites>'
    )
    bench = {"results": {"samples_per_s": 812.5, "mfu": 0.41, "mfu_vs_spec": 0.33}}
    (tmp_path / "bench.out").write_text("a note\n" + json.dumps(bench, indent=2))
    run = tmp_path / "ecg"
    run.mkdir()
    micro = {"micro_batch_size": 1024, "accumulation": 2, "first_step_peak_gib": 61.5}
    env = {"precision": "bf16", "world_size": 1, "global_batch_size": 2048, "micro_batch": micro}
    (run / "env.json").write_text(json.dumps(env))
    rates = [10.0, 500.0, 520.0, 480.0]  # the first window holds the start-up
    lines = [
        json.dumps({"step": 10 * (i + 1), "loss": 1.0 / (i + 1), "samples_per_s": r})
        for i, r in enumerate(rates)
    ]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    summary = summarise(tmp_path)
    assert summary["device"] == ["2.14.1", "NVIDIA H200"]
    assert summary["tests"]["counts"] == {"passed": 3, "failed": 1, "skipped": 2}
    assert summary["bench"]["samples_per_s"] == 812.5 and summary["bench"]["mfu_vs_spec"] == 0.33
    assert summary["two_processes"]["error"] == "RuntimeError: invalid device ordinal"
    ecg = summary["ecg"]
    assert ecg["samples_per_s"] == 500.0 and ecg["steps"] == 40 and ecg["final_loss"] == 0.25
    assert ecg["micro_batch"] == 1024 and ecg["first_step_peak_gib"] == 61.5
    assert summary["image"]["steps"] == 0 and summary["image"]["samples_per_s"] is None
