"""`jepactl bench`: the report's parts are consistent (no timing thresholds)."""

from __future__ import annotations

import pytest

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.bench import PHASES, run_bench, spec_peak_tflops
from jepactl.errors import UserError
from jepactl.recipe import load_recipe


@pytest.mark.slow
def test_bench_report_is_consistent():
    recipe = load_recipe("image/ijepa-cpu", TINY_IMAGE_OVERRIDES)
    report = run_bench(recipe, steps=2, warmup=1, batch_size=4, precision="fp32", repeats=1)
    assert sum(report[f"{p}_fraction"] for p in PHASES) == pytest.approx(1.0)
    assert report["batch_size"] == 4 and report["precision"] == "fp32"
    assert report["samples_per_s"] > 0 and report["gflops_per_sample"] > 0
    assert report["achieved_tflops"] == pytest.approx(
        report["gflops_per_sample"] * report["samples_per_s"] / 1e3
    )
    assert 0 <= report["mask_sampling_fraction"] and report["peak_memory_mb"] > 0
    assert 0 < report["step_memory_mb"] < report["peak_memory_mb"]  # above the resting process
    assert report["spec_peak_tflops"] is None and report["mfu_vs_spec"] is None  # a CPU


@pytest.mark.slow
def test_bench_mfu_against_a_given_peak_and_the_known_gpus():
    recipe = load_recipe("image/ijepa-cpu", TINY_IMAGE_OVERRIDES)
    report = run_bench(
        recipe, steps=1, warmup=0, batch_size=4, precision="fp32", repeats=1, peak_tflops=0.5
    )
    assert report["mfu_vs_spec"] == pytest.approx(report["achieved_tflops"] / 0.5)
    assert spec_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert spec_peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert spec_peak_tflops("NVIDIA H200", "fp32") == 66.9
    assert spec_peak_tflops("Tesla T4", "bf16") is None
    with pytest.raises(UserError, match="--peak-tflops"):
        run_bench(recipe, steps=1, peak_tflops=0.0)


@pytest.mark.slow
def test_bench_flops_scale_with_the_encoder_depth():
    shallow = run_bench(
        load_recipe("image/ijepa-cpu", TINY_IMAGE_OVERRIDES),
        steps=1,
        warmup=0,
        batch_size=4,
        precision="fp32",
        repeats=1,
    )
    deep = run_bench(
        load_recipe("image/ijepa-cpu", [*TINY_IMAGE_OVERRIDES, "model.depth=4"]),
        steps=1,
        warmup=0,
        batch_size=4,
        precision="fp32",
        repeats=1,
    )
    assert deep["gflops_per_sample"] > 1.5 * shallow["gflops_per_sample"]


def test_bench_rejects_a_bad_precision():
    with pytest.raises(UserError, match="--precision"):
        run_bench(load_recipe("image/ijepa-cpu", TINY_IMAGE_OVERRIDES), steps=1, precision="fp8")
