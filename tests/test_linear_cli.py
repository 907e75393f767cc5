"""`jepactl pretrain linear/...` and `jepactl probe` on its run: files, table, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jepactl.cli import app

SMALL = [
    "model.depths=[1,2]",
    "model.init_scale=1e-2",
    "optim.mae_lr=0.05",
    "train.max_steps=1500",
    "train.log_points=200",
    "train.log_every=500",
]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear") / "run"
    result = invoke("pretrain", "linear/linear-jepa-mae", "--out", out, "--json", "--quiet", *SMALL)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)["results"]


def test_pretrain_prints_the_ratio_table_and_writes_the_run_folder(run_dir):
    out, table = run_dir
    assert table["finished"] is True and table["step"] == 1500
    assert set(k for k in table if k.endswith("_ratio")) == {
        "jepa_L1_ratio",
        "jepa_L2_ratio",
        "mae_L1_ratio",
        "mae_L2_ratio",
    }
    assert table["mae_L1_ratio"] < 1 and table["jepa_L1_order"] == "noisy < influential"
    for key in ("figure", "metrics", "summary"):
        assert (out / table[key].split("/")[-1]).is_file()
    assert (out / "recipe.yaml").is_file() and (out / "env.json").is_file()
    png = (out / "weights_over_time.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and lines[-1]["step"] == 1500
    assert lines[-1]["jepa_time"] == pytest.approx(1500 * 1.0)
    assert lines[-1]["mae_time"] == pytest.approx(1500 * 0.05)
    assert lines[-1]["jepa_L2_gain_influential"] == pytest.approx(0.81, rel=1e-3)


def test_probe_reports_top_component_r2_and_all_components_match_the_input(run_dir):
    out, _ = run_dir
    result = invoke("probe", out, "--json")
    assert result.exit_code == 0, result.output
    r2 = json.loads(result.stdout)["results"]
    assert r2["jepa_L1_probe_r2"] == pytest.approx(0.81 / 2.1, rel=1e-4)
    assert r2["mae_L1_probe_r2"] == pytest.approx(0.36 / 2.1, rel=1e-4)
    # Every full-rank encoder carries the input's linear information about z.
    both = json.loads(invoke("probe", out, "--json", "probe.components=2").stdout)["results"]
    for key in ("jepa_L1_probe_r2", "mae_L2_probe_r2"):
        assert both[key] == pytest.approx(both["input_probe_r2"], rel=1e-6)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--data", "/some/folder"], "data.path"),
        (["data.rhos=[1.5,0.9]"], "data.rhos"),
        (["report.ratio_of=[noisy,clean]"], "report.ratio_of"),
        (["finetune.epochs=3"], "finetune.epochs"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, fragment):
    result = invoke("pretrain", "linear/linear-jepa-mae", "--out", tmp_path / "r", *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_an_existing_run_needs_resume(run_dir):
    out, _ = run_dir
    result = invoke("pretrain", "linear/linear-jepa-mae", "--out", out, *SMALL)
    assert result.exit_code == 2 and "--resume" in result.stderr
    resumed = invoke(
        "pretrain", "linear/linear-jepa-mae", "--out", out, "--resume", "--json", "--quiet"
    )
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["results"]["step"] == 1500


def test_the_three_experiments_are_packaged_recipes():
    from jepactl.recipe import list_recipes

    assert {
        "linear/linear-jepa-mae",
        "linear/linear-jepa-mae-lambda-order",
        "linear/linear-jepa-mae-rho-order",
        "linear/linear-jepa-mae-samples",
    } <= set(list_recipes())
