"""The deep linear JEPA-vs-MAE dynamics: learning orders, fixed points, modes and resume.

Runs are scaled down from the packaged recipes (ε = 5e-3 instead of 1e-3 shortens JEPA's
plateaus ~100×, depths 1–3) so each takes well under a second; the flip survives the change:
at ε = 5e-3 the gradient-flow ODE gives JEPA ratios 0.76, 0.97, 1.35 and MAE 0.66, 0.72, 0.73.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jepactl.domains.linear.deep_linear import DeepLinearModels
from jepactl.domains.linear.experiment import build_simulation, feature_set, run_experiment
from jepactl.errors import RecipeError
from jepactl.recipe import load_recipe

SMALL_FLIP = [
    "model.init_scale=5e-3",
    "model.depths=[1,2,3]",
    "train.max_steps=7000",
    "train.log_points=400",
    "train.log_every=1000",
    "train.checkpoint_every=5000",
]


def run(tmp: Path, recipe: str = "linear/linear-jepa-mae", overrides=(), **kwargs) -> dict:
    config = load_recipe(recipe, list(overrides))
    run_experiment(config, tmp, quiet=True, **kwargs)
    return json.loads((tmp / "summary.json").read_text())


@pytest.fixture(scope="module")
def flip_summary(tmp_path_factory) -> dict:
    return run(tmp_path_factory.mktemp("flip"), overrides=SMALL_FLIP)


def test_jepa_learns_the_influential_feature_first_at_depth_3_and_mae_never(flip_summary):
    models = flip_summary["models"]
    assert [round(models[f"jepa_L{d}"]["ratio"], 2) for d in (1, 2, 3)] == [0.76, 0.97, 1.34]
    assert models["jepa_L3"]["order"] == "influential < noisy"
    for depth in (1, 2, 3):
        assert models[f"mae_L{depth}"]["ratio"] < 0.75
        assert models[f"mae_L{depth}"]["order"] == "noisy < influential"


def test_gradient_descent_ratios_match_the_gradient_flow_ode(flip_summary):
    for name, model in flip_summary["models"].items():
        # MAE's critical times are a few time units: its lr 0.01 steps show at the 0.5% level.
        tolerance = 0.005 if model["objective"] == "jepa" else 0.01
        assert model["ratio"] == pytest.approx(model["ode_ratio"], rel=tolerance), name


def test_final_weights_are_rho_to_the_L_for_jepa_and_rho_to_the_L_over_L_plus_1_for_mae(
    flip_summary,
):
    for name, model in flip_summary["models"].items():
        for feature, value in model["final"].items():
            assert value == pytest.approx(model["theory_final"][feature], rel=2e-3), (name, feature)
    assert flip_summary["models"]["jepa_L2"]["final"]["noisy"] == pytest.approx(0.09, rel=2e-3)
    assert flip_summary["models"]["mae_L1"]["final"]["noisy"] == pytest.approx(0.3**0.5, rel=2e-3)


def test_jepa_top_component_probe_reads_the_clean_latent_better_than_mae(flip_summary):
    # JEPA's encoder amplifies the influential feature (0.9 vs 0.3), MAE's the noisy one
    # (λ·W̄² = 1.2 vs 0.9): R² of z from the top component is 0.386 vs 0.171 (= the raw input's).
    models = flip_summary["models"]
    assert models["jepa_L1"]["probe_r2"] == pytest.approx(0.81 / 2.1, rel=1e-6)
    assert models["mae_L1"]["probe_r2"] == pytest.approx(0.36 / 2.1, rel=1e-6)
    assert flip_summary["input_probe_r2"] == pytest.approx(0.36 / 2.1, rel=1e-6)


def test_lambda_only_rescales_time_so_both_objectives_are_ordered_by_it(tmp_path):
    summary = run(
        tmp_path,
        overrides=[
            "data.names=[big,small]",
            "data.lambdas=[2.0,0.5]",
            "data.rhos=[1.0,1.0]",
            "report.ratio_of=[small,big]",
            "model.depths=[1,2]",
            "model.init_scale=1e-2",
            "optim.jepa_lr=0.2",
            "train.max_steps=6000",
            "train.log_points=400",
        ],
    )
    for name, model in summary["models"].items():
        assert model["ratio"] == pytest.approx(4.0, rel=0.02), name


def test_diagonal_and_dense_storage_follow_the_same_trajectory():
    config = load_recipe("linear/linear-jepa-mae", ["model.depths=[1,3]", "model.init_scale=0.05"])
    diag, _ = build_simulation(config)
    config.model.init = "orthogonal"  # forces dense storage; then reset the layers to aligned
    dense, _ = build_simulation(config)
    dense.models.layers = diag.models.algebra.dense(diag.models.layers)
    pop = dense.train
    for _ in range(300):
        diag.models.descend(diag.train.xx, diag.train.yx)
        dense.models.descend(pop.xx, pop.yx)
    np.testing.assert_allclose(
        diag.models.algebra.dense(diag.models.layers), dense.models.layers, rtol=1e-12, atol=1e-15
    )


def test_ema_target_keeps_the_fixed_points(tmp_path):
    summary = run(
        tmp_path,
        overrides=SMALL_FLIP[:1]
        + [
            "model.depths=[1,2]",
            "ema.momentum=0.9",
            "loss.objectives=[jepa]",
            "train.max_steps=3000",
            "train.log_points=200",
        ],
    )
    for name, model in summary["models"].items():
        assert "ode_ratio" not in model  # the ODEs assume a stop-gradient target
        for feature, value in model["final"].items():
            rho = summary["features"][feature]["rho"]
            assert value == pytest.approx(rho ** model["depth"], rel=2e-3), (name, feature)


def test_orthogonal_init_is_balanced_with_encoder_gain_epsilon():
    models = DeepLinearModels.create(
        ["jepa"], [3], 4, "orthogonal", 1e-3, 0, 0.0, False, {"jepa": 1.0}
    )
    layers = models.layers[0]
    for lower, upper in zip(layers[:-1], layers[1:]):
        np.testing.assert_allclose(upper.T @ upper, lower @ lower.T, atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(models.encoders()[0], axis=0), 1e-3, rtol=1e-12)
    assert not np.allclose(models.encoders()[0], 1e-3 * np.eye(4))


def test_samples_mode_reaches_the_population_weights_and_order(tmp_path):
    # jepa_lr 0.4, not 1: finite samples open off-diagonal directions whose curvature mixes
    # one feature's λ with another's weight (see LinearOptimConfig).
    overrides = [
        "model.depths=[1]",
        "model.init_scale=1e-2",
        "optim.jepa_lr=0.4",
        "optim.mae_lr=0.05",
        "train.max_steps=2500",
        "train.log_points=300",
    ]
    population = run(tmp_path / "population", overrides=overrides)
    # Full-batch GD on 4000 pairs: the sample's λ̂, ρ̂ differ from the population's by ~2%, and
    # its off-diagonal covariances (~0.03) couple the features: the noisy row of W̄ picks up
    # some x_influential, which speeds that column's gain up (ratio 0.84 vs 0.76, measured).
    samples = run(
        tmp_path / "samples",
        overrides=overrides + ["data.mode=samples", "data.num_pairs=4000", "train.batch_size=4000"],
    )
    for name, model in samples["models"].items():
        reference = population["models"][name]
        assert model["order"] == reference["order"] == "noisy < influential"
        for feature, value in model["final"].items():
            assert value == pytest.approx(reference["final"][feature], rel=0.05), (name, feature)
        assert model["ratio"] == pytest.approx(reference["ratio"], rel=0.15), name


def test_resume_continues_the_same_trajectory(tmp_path):
    overrides = [
        "data.mode=samples",
        "data.num_pairs=1000",
        "train.batch_size=50",
        "model.depths=[1,2]",
        "model.init_scale=1e-2",
        "optim.jepa_lr=0.4",
        "train.max_steps=1500",
        "train.log_points=100",
        "train.checkpoint_every=500",
    ]
    whole = run(tmp_path / "whole", overrides=overrides)
    config = load_recipe("linear/linear-jepa-mae", overrides)
    result = run_experiment(config, tmp_path / "split", quiet=True, stop_at=700)
    assert result["finished"] is False and result["step"] == 700
    resumed = run(tmp_path / "split", overrides=overrides, resume=True)
    assert resumed["models"] == whole["models"]
    assert (tmp_path / "split" / "metrics.jsonl").read_text() == (
        tmp_path / "whole" / "metrics.jsonl"
    ).read_text()


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["data.rhos=[1.5,0.9]"], "data.rhos"),
        (["data.lambdas=[4.0]"], "data.lambdas"),
        (["report.ratio_of=[noisy,clean]"], "report.ratio_of"),
        (["model.depths=[0,1]"], "model.depths"),
        (["data.path=/some/folder"], "data.path"),
        (["optim.jepa_lr=0"], "optim.jepa_lr"),
    ],
)
def test_bad_recipe_values_name_their_key(overrides, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        feature_set(load_recipe("linear/linear-jepa-mae", overrides))


@pytest.mark.parametrize(
    "name",
    [
        "linear/linear-jepa-mae",
        "linear/linear-jepa-mae-lambda-order",
        "linear/linear-jepa-mae-rho-order",
        "linear/linear-jepa-mae-samples",
    ],
)
def test_packaged_recipes_load_and_name_their_ratio_features(name):
    features = feature_set(load_recipe(name))
    assert features.dim >= 2
