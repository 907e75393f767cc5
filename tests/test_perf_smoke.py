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
    scripts = {path.name for path in PERF.glob("*.py")}
    assert scripts == set(SCRIPTS)
    for script in SCRIPTS:
        assert '"--smoke"' in (PERF / script).read_text(), script
