"""T-JEPA end to end through the CLI: pretrain, probe, errors (domains/tabular/method.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from jepactl.cli import app

TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "model.num_heads=2",
    "predictor.embed_dim=8",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "train.batch_size=32",
    "train.num_workers=0",
    "train.log_every=2",
    "train.precision=fp32",
]


def synthetic(path: Path, rows: int, seed: int) -> Path:
    """A table whose label depends on a numeric and a categorical column, with missing cells."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    label = np.where(a + (colour == "red") * 1.5 > 0.5, "yes", "no")
    frame = pd.DataFrame(
        {
            "a": a.round(3),
            "b": b.round(3).astype(object),
            "colour": colour,
            "size": rng.integers(1, 5, rows),
            "label": label,
        }
    )
    frame.loc[::7, "b"] = "?"
    frame.to_csv(path, index=False, sep=";")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tjepa")
    train = synthetic(root / "train.csv", 400, 0)
    test = synthetic(root / "test.csv", 200, 1)
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "tabular/tjepa-cpu",
            "--data",
            str(train),
            "--out",
            str(root / "run"),
            "--max-steps",
            "6",
            "--quiet",
            "data.target=label",
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    return root, train, test


def test_pretraining_stores_fitted_stats_without_the_target(run):
    root, _, _ = run
    recipe = yaml.safe_load((root / "run" / "recipe.yaml").read_text())
    fitted = recipe["data"]["fitted"]
    names = [c["name"] for c in fitted["numeric"] + fitted["categorical"]]
    assert names == ["a", "b", "size", "colour"]
    assert fitted["numeric"][1]["indicator"] is True
    metrics = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4, 6]
    assert all(m["embed_std"] > 0 and m["effective_rank"] > 1 for m in metrics)


def test_probe_compares_raw_and_tjepa_heads_over_seeds(run):
    root, train, test = run
    result = CliRunner().invoke(
        app,
        [
            "probe",
            str(root / "run"),
            "--data",
            str(train),
            "--test",
            str(test),
            "--seeds",
            "2",
            "--json",
            "probe.mlp_max_epochs=5",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["results"]
    assert out["task"] == "classification" and out["test_samples"] == 200
    for head in ("linear", "mlp"):
        for name in ("raw", "tjepa"):
            assert 0.5 < out[f"{head}_accuracy_{name}"] <= 1.0
            assert 0.5 < out[f"{head}_roc_auc_{name}"] <= 1.0
            assert out[f"{head}_accuracy_{name}_std"] >= 0.0
            assert len(out[f"{head}_accuracy_{name}_per_seed"]) == 2
    # The label is a simple function of the raw features: a linear model finds it.
    assert out["linear_roc_auc_raw"] > 0.9


def test_probe_regression_hides_a_target_that_was_a_feature(run):
    root, train, test = run
    result = CliRunner().invoke(
        app,
        [
            "probe",
            str(root / "run"),
            "--data",
            str(train),
            "--test",
            str(test),
            "--target",
            "a",
            "--head",
            "linear",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["results"]
    assert out["task"] == "regression" and "hidden" in out["note"]
    # 'a' is hidden, so it cannot be predicted from itself (pure noise b/size, some label info).
    assert 0.3 < out["linear_rmse_raw"] < 1.2


@pytest.mark.parametrize(
    "content,args,message",
    [
        ("a,b\n1,2\n3,4\n", ["--target", "income"], "no target column 'income'"),
        ("a;b;size;colour;label\nabc;1;2;red;yes\n", [], "column 'a' row 1: 'abc' is not a number"),
    ],
)
def test_probe_data_errors_exit_2_with_one_line(run, content, args, message):
    root, train, _ = run
    bad = root / "bad.csv"
    bad.write_text(content)
    result = CliRunner().invoke(
        app, ["probe", str(root / "run"), "--data", str(train), "--test", str(bad), *args]
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "is empty"),
        ("label\nyes\nno\n", "no feature columns"),
    ],
)
def test_pretrain_on_unusable_files_exits_2(tmp_path, content, message):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "tabular/tjepa-cpu",
            "--data",
            str(bad),
            "--out",
            str(tmp_path / "r"),
            "data.target=label",
        ],
    )
    assert result.exit_code == 2 and message in result.output


def test_pretrain_on_nested_parquet_exits_2(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0], "tags": [["a"], ["b", "c"]]}), tmp_path / "n.parquet")
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "tabular/tjepa-cpu",
            "--data",
            str(tmp_path / "n.parquet"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2 and "column 'tags' is nested" in result.output


def test_export_carries_the_fitted_preprocessing_and_embeds_the_same(run, tmp_path):
    import jepactl

    root, _, test = run
    assert (
        CliRunner()
        .invoke(app, ["export", str(root / "run"), "--out", str(tmp_path / "exp")])
        .exit_code
        == 0
    )
    encoder = jepactl.load_encoder(tmp_path / "exp")
    recipe = yaml.safe_load((root / "run" / "recipe.yaml").read_text())
    assert encoder.tokenizer_config["preprocessing"] == recipe["data"]["fitted"]
    for source, name in ((root / "run", "a.npy"), (tmp_path / "exp", "b.npy")):
        result = CliRunner().invoke(
            app, ["embed", str(source), "--data", str(test), "--out", str(tmp_path / name)]
        )
        assert result.exit_code == 0, result.output
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (200, 16) and np.allclose(a, b, atol=1e-3)


def test_eval_data_keeps_pretraining_class_indices_on_a_one_class_file(run, tmp_path):
    from jepactl.domains.tabular import method as tjepa
    from jepactl.recipe import read_yaml, recipe_from_dict

    root, _, _ = run
    recipe = recipe_from_dict(read_yaml(root / "run" / "recipe.yaml"))
    only_yes = tmp_path / "yes.csv"
    only_yes.write_text("a;b;size;colour;label\n1;2;3;red;yes\n0;?;1;blue;yes\n")
    dataset = tjepa.eval_data(recipe, str(only_yes), None)
    assert dataset.classes == ["no", "yes"] and dataset.labels.tolist() == [1, 1]
    x, y = dataset[1]
    assert x.shape == (5,) and int(y) == 1


@pytest.mark.slow
def test_resume_continues_the_same_loss_curve(run, tmp_path):
    _, train, _ = run
    base = [
        "pretrain",
        "tabular/tjepa-cpu",
        "--data",
        str(train),
        "--quiet",
        "data.target=label",
        "train.checkpoint_every=2",
        *TINY,
    ]
    assert (
        CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--max-steps", "4"]).exit_code
        == 0
    )
    assert (
        CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--max-steps", "2"]).exit_code
        == 0
    )
    result = CliRunner().invoke(
        app, ["pretrain", str(tmp_path / "b"), "--resume", "--quiet", "--max-steps", "4"]
    )
    assert result.exit_code == 0, result.output
    losses = [
        [json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("a", "b")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def regression_table(path: Path, rows: int, seed: int) -> Path:
    """A numeric target that is a linear function of one numeric and one categorical column."""
    rng = np.random.default_rng(seed)
    a, kind = rng.normal(size=rows), rng.choice(["x", "y"], size=rows)
    frame = pd.DataFrame(
        {
            "a": a,
            "noise": rng.normal(size=rows),
            "kind": kind,
            "price": 100 + 20 * a + 10 * (kind == "x") + rng.normal(size=rows),
        }
    )
    frame.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_finetune_regression_trains_the_encoder_and_reports_rmse(tmp_path):
    from safetensors.torch import load_file

    from jepactl.evaluate.source import open_encoder, open_recipe

    data = regression_table(tmp_path / "houses.csv", 400, 0)
    assert (
        CliRunner()
        .invoke(
            app,
            [
                "pretrain",
                "tabular/tjepa-cpu",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "4",
                "--quiet",
                "data.target=price",
                *TINY,
            ],
        )
        .exit_code
        == 0
    )
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            str(tmp_path / "run"),
            "--out",
            str(tmp_path / "ft"),
            "--quiet",
            "--json",
            "finetune.epochs=40",
            "finetune.batch_size=32",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["results"]
    assert out["task"] == "regression"
    # RMSE is reported on the standardised target and in the target's own units (std ~ 22).
    assert out["test_rmse_original"] == pytest.approx(out["test_rmse"] * 22.3, rel=0.15)
    assert out["test_r2"] > 0.8 and out["test_rmse"] < 0.45
    # Every encoder weight is trained, not only the head (the run's target encoder is frozen).
    recipe = open_recipe(tmp_path / "run")
    before = open_encoder(tmp_path / "run", "target", recipe=recipe).encoder.state_dict()
    after = load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert not torch.equal(before["blocks.0.mlp.fc1.weight"], after["blocks.0.mlp.fc1.weight"])
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["task"] == "regression" and config["target_std"] == pytest.approx(22.3, rel=0.15)


def test_finetune_refuses_a_target_that_was_an_input_feature(tmp_path):
    data = regression_table(tmp_path / "houses.csv", 100, 0)
    assert (
        CliRunner()
        .invoke(
            app,
            [
                "pretrain",
                "tabular/tjepa-cpu",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "2",
                "--quiet",
                *TINY,
            ],
        )
        .exit_code
        == 0
    )
    result = CliRunner().invoke(
        app, ["finetune", str(tmp_path / "run"), "--target", "price", "--quiet"]
    )
    assert result.exit_code == 2
    assert "'price' was an input feature at pretraining" in result.output
