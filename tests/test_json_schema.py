"""Every command's ``--json``: one top level (command, run, recipe, results, settings) for every
domain, and seeded metrics as ``metric``, ``metric_std``, ``metric_per_seed``."""

from __future__ import annotations

import json
import math

import pytest
from test_concepts_cli import TINY as TINY_CONCEPTS
from test_ecg_method import TINY as TINY_ECG
from test_lidar_method import TINY as TINY_LIDAR
from test_lidar_method import object_folder
from test_linear_cli import SMALL as SMALL_LINEAR
from test_sar_method import TINY_SAR, speckled_chips
from test_seq_jepa import TINY as TINY_SEQ
from test_seq_jepa import image_folder
from test_tabular_method import TINY as TINY_TABULAR
from test_tabular_method import synthetic
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.cli import app
from jepactl.evaluate.seeds import aggregate

TOP_LEVEL = ["command", "run", "recipe", "results", "settings"]


def json_of(*args) -> dict:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == TOP_LEVEL
    assert isinstance(out["results"], dict) and isinstance(out["settings"], dict)
    return out


# Per domain: (recipe, its tiny pretraining arguments, the cheapest probe arguments).
def image(tmp_path):
    return "image/ijepa-cpu", TINY_IMAGE_OVERRIDES, ["probe.batch_size=64"]


def sar(tmp_path):
    return (
        "sar/sar-jepa-cpu",
        ["--data", speckled_chips(tmp_path / "chips"), *TINY_SAR],
        ["--shots", "2"],
    )


def ecg(tmp_path):
    return (
        "ecg/ecg-jepa-cpu",
        TINY_ECG,
        [
            "--head",
            "linear",
            "probe.max_train_per_class=20",
            "probe.max_test_per_class=20",
            "probe.num_workers=0",
        ],
    )


def tabular(tmp_path):
    train = synthetic(tmp_path / "train.csv", 200, 0)
    return (
        "tabular/tjepa-cpu",
        ["--data", train, "data.target=label", *TINY_TABULAR],
        ["--head", "linear"],
    )


def concepts(tmp_path):
    return "concepts/concept-jepa-cpu", [*TINY_CONCEPTS, "model.predictor_depth=1"], []


def linear(tmp_path):
    return "linear/linear-jepa-mae", [*SMALL_LINEAR, "train.log_points=2", "train.log_every=1"], []


def views(tmp_path):
    data = image_folder(tmp_path / "images")
    return "views/seq-jepa-cpu", ["--data", data, *TINY_SEQ], ["--views", "1"]


def lidar(tmp_path):
    data = object_folder(tmp_path / "objects")
    return "lidar/ad-l-jepa-objects-cpu", ["--data", data, *TINY_LIDAR], ["--seeds", "1"]


@pytest.mark.parametrize(
    "domain", [image, sar, ecg, tabular, concepts, linear, views, lidar], ids=lambda f: f.__name__
)
@pytest.mark.slow
def test_pretrain_and_probe_json_have_one_top_level_on_every_domain(tmp_path, domain):
    recipe, pretrain_args, probe_args = domain(tmp_path)
    run = tmp_path / "run"
    done = json_of(
        "pretrain", recipe, *pretrain_args, "--out", run, "--max-steps", 2, "--quiet", "--json"
    )
    assert done["command"] == "pretrain" and done["run"] == str(run) and done["recipe"] == recipe
    assert done["settings"]["recipe"] == recipe and done["settings"]["out"] == str(run)
    assert done["settings"]["max_steps"] == 2 and done["settings"]["resume"] is False
    assert done["results"]["step"] == 2

    probed = json_of("probe", run, *probe_args, "--json")
    assert probed["command"] == "probe" and probed["run"] == str(run)
    assert probed["recipe"] == recipe
    assert probed["settings"]["seeds"] == 1 and "run" not in probed["settings"]
    assert probed["settings"]["overrides"] == [a for a in probe_args if "=" in a]
    assert probed["results"]  # the metrics, as the table shows them


def test_seeded_metrics_are_mean_std_and_per_seed_values(tmp_path):
    run = tmp_path / "run"
    json_of(
        "pretrain",
        "concepts",
        *TINY_CONCEPTS,
        "model.predictor_depth=1",
        "data.probe_facts=8",
        "--out",
        run,
        "--max-steps",
        2,
        "--quiet",
        "--json",
    )
    results = json_of("probe", run, "--seeds", 2, "--json")["results"]
    metrics = [k for k in results if f"{k}_per_seed" in results]
    assert {"train_mrr", "atomic_mrr", "test_mrr"} <= set(metrics)
    for key in metrics:
        values = results[f"{key}_per_seed"]
        assert len(values) == 2
        assert results[key] == pytest.approx(sum(values) / 2)
        assert results[f"{key}_std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))


def test_aggregate_writes_metric_std_and_per_seed_for_every_metric():
    out = aggregate([{"acc": 0.5, "auc": 0.75}, {"acc": 1.0, "auc": 0.25}])
    assert list(out) == ["acc", "acc_std", "acc_per_seed", "auc", "auc_std", "auc_per_seed"]
    assert out["acc"] == 0.75 and out["acc_per_seed"] == [0.5, 1.0]
    assert out["acc_std"] == pytest.approx(math.sqrt(0.125))
    single = aggregate([{"acc": 0.5}])
    assert single == {"acc": 0.5, "acc_std": 0.0, "acc_per_seed": [0.5]}
    assert math.isnan(aggregate([{"auc": float("nan")}, {"auc": 1.0}])["auc_std"])
