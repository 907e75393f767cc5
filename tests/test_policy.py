"""ACT-JEPA (domains/policy): demonstration readers, windows, the model, rollouts, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.domains.policy.demos import (
    DemoDataConfig,
    DemoWindows,
    fit,
    open_demos,
    split_episodes,
)
from jepactl.domains.policy.rollout import ChunkEnsemble, RolloutConfig, run_rollouts
from jepactl.recipe import load_recipe

zarr = pytest.importorskip("zarr")

TINY = [
    "model.dim=16",
    "model.heads=2",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.feedforward=32",
    "data.chunk=4",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.precision=fp32",
    "train.log_every=1",
    "probe.probe_frames=50",
]


def write_zarr(path, lengths=(12, 9, 15, 10), drop=(), ends=None, image_size=None):
    """A replay buffer whose state t of episode e is (e, t, 0, 0, 0) and action = state[:2] + 1;
    with ``image_size`` frame i's image is filled with the value i (0-255, as Push-T's)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    states = np.concatenate(
        [np.stack([[e, t, 0, 0, 0] for t in range(n)]) for e, n in enumerate(lengths)]
    ).astype(np.float32)
    arrays = {
        "data/state": states,
        "data/action": states[:, :2] + 1,
        "meta/episode_ends": np.asarray(ends if ends is not None else np.cumsum(lengths)),
    }
    if image_size:
        frames = np.arange(len(states), dtype=np.float32) % 256
        arrays["data/img"] = np.tile(frames[:, None, None, None], (1, image_size, image_size, 3))
    for name, value in arrays.items():
        if name not in drop:
            root.create_array(name, data=value)
    return path


def test_a_zarr_replay_buffer_reads_into_episodes(tmp_path):
    demos = open_demos(str(write_zarr(tmp_path / "d.zarr")))
    assert demos.states.shape == (46, 5) and demos.actions.shape == (46, 2)
    assert demos.episode_lengths().tolist() == [12, 9, 15, 10]
    assert demos.frames_of(np.array([1])).tolist() == list(range(12, 21))


def test_windows_never_cross_an_episode_end_and_mask_the_padding(tmp_path):
    demos = open_demos(str(write_zarr(tmp_path / "d.zarr")))
    config = DemoDataConfig(chunk=4, val_fraction=0.0)
    fitted = fit(demos, config)
    fitted |= {"state_mean": [0.0] * 5, "state_std": [1.0] * 5}
    fitted |= {"action_mean": [0.0] * 2, "action_std": [1.0] * 2}
    windows = DemoWindows(demos, [0], config, fitted)
    last = windows[10]  # frame 10 of a 12-frame episode
    assert last["actions"][:, 1].tolist() == [11.0, 12.0, 12.0, 12.0]  # repeats the last action
    assert last["action_valid"].tolist() == [True, True, False, False]
    assert last["future_states"][:, 1].tolist() == [11.0, 11.0, 11.0, 11.0]
    assert last["future_valid"].tolist() == [True, False, False, False]
    assert bool((last["future_states"][:, 0] == 0).all())  # never episode 1's frames


def test_statistics_come_from_training_episodes_only_and_the_split_is_by_episode(tmp_path):
    demos = open_demos(str(write_zarr(tmp_path / "d.zarr", lengths=(10,) * 10)))
    fitted = fit(demos, DemoDataConfig(chunk=2, val_fraction=0.2, split_seed=1))
    train, val = fitted["train_episodes"], fitted["val_episodes"]
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert fitted["state_mean"][0] == pytest.approx(np.mean(train))
    assert split_episodes(10, 0.2, 1)[1].tolist() == val


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"drop": ("data/action",)}, "has no data/action"),
        ({"ends": [12, 21, 36, 99]}, "meta/episode_ends out of range"),
        ({"ends": [12, 12, 36, 46]}, "meta/episode_ends out of range"),
    ],
)
def test_bad_replay_buffers_are_one_line_user_errors(tmp_path, kwargs, message):
    data = write_zarr(tmp_path / "d.zarr", **kwargs)
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "policy/act-jepa-state-cpu",
            "--data",
            str(data),
            *TINY,
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_chunk_longer_than_every_episode_is_refused(tmp_path):
    data = write_zarr(tmp_path / "d.zarr")
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "policy/act-jepa-state-cpu",
            "--data",
            str(data),
            *TINY,
            "data.chunk=40",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "'data.chunk' = 40 is longer than every episode" in result.output


def test_a_lerobot_folder_without_actions_is_a_user_error(tmp_path):
    import pandas as pd

    folder = tmp_path / "lerobot" / "data"
    folder.mkdir(parents=True)
    frames = pd.DataFrame(
        {
            "episode_index": [0, 0, 1],
            "frame_index": [0, 1, 0],
            "observation.state": [[0.0, 1.0]] * 3,
        }
    )
    frames.to_parquet(folder / "episode_000000.parquet")
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "policy/act-jepa-state-cpu",
            "--data",
            str(tmp_path / "lerobot"),
            *TINY,
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2 and "has no 'action' column" in result.output


def test_a_lerobot_folder_reads_in_episode_and_frame_order(tmp_path):
    import pandas as pd

    folder = tmp_path / "lerobot" / "data"
    folder.mkdir(parents=True)
    frames = pd.DataFrame(
        {
            "episode_index": [1, 0, 0, 1],
            "frame_index": [0, 1, 0, 1],
            "observation.state": [[10.0], [1.0], [0.0], [11.0]],
            "action": [[5.0], [6.0], [7.0], [8.0]],
        }
    )
    frames.to_parquet(folder / "episode_000000.parquet")
    demos = open_demos(str(tmp_path / "lerobot"))
    assert demos.states[:, 0].tolist() == [0.0, 1.0, 10.0, 11.0]
    assert demos.episode_ends.tolist() == [2, 4]


def test_the_latent_loss_trains_the_predictor_only_with_a_positive_weight(tmp_path):
    data = write_zarr(tmp_path / "d.zarr")
    for weight, expect in ((1.0, True), (0.0, False)):
        recipe = load_recipe(
            "policy/act-jepa-state-cpu", [*TINY, f"objective.latent_weight={weight}"]
        )
        from jepactl.domains.policy.method import build, pretrain_data

        dataset, collate, _ = pretrain_data(recipe, str(data))
        model = build(recipe).train()
        assert model.context_encoder.training and not model.target_encoder.training
        batch = collate([dataset[(i, 0, 0)] for i in range(8)])
        if expect:  # the targets carry no dropout noise: two draws agree
            first = model.target_encoder(batch["state"])[1]
            assert torch.equal(first, model.target_encoder(batch["state"])[1])
        out = model(batch)
        assert ("latent_loss" in out) == expect
        out["loss"].backward()
        has_grad = any(p.grad is not None for p in model.predictor.parameters())
        assert has_grad == expect
        assert all(p.grad is None for p in model.target_encoder.parameters())


def test_image_windows_hold_the_frame_and_its_future_frames_resized_once(tmp_path):
    data = write_zarr(tmp_path / "d.zarr", lengths=(12, 9), image_size=8)
    config = DemoDataConfig(observation="image", image_size=4, chunk=3, state_dims=[0, 1])
    demos = open_demos(str(data), config)
    assert demos.states.shape[1] == 2 and demos.all_states.shape[1] == 5
    windows = DemoWindows(demos, [0, 1], config, fit(demos, config))
    sample = windows[19]  # frame 19 is episode 1's frame 7; the episode ends at frame 21
    assert sample["image"].shape == (3, 4, 4)
    assert sample["image"].mul(255).round().unique().tolist() == [19.0]
    seen = sample["future_images"].mul(255).round().amax(dim=(1, 2, 3)).tolist()
    assert seen == [20.0, 20.0, 20.0] and sample["future_valid"].tolist() == [True, False, False]
    assert windows.images.dtype == np.uint8 and windows.images.shape == (21, 4, 4, 3)
    lean = DemoWindows(demos, [0, 1], config, fit(demos, config), future_images=False)
    assert "future_images" not in lean[19] and "image" in lean[19]


def test_the_world_model_targets_are_the_whole_state_even_when_only_part_is_observed(tmp_path):
    from jepactl.domains.policy.probe import future_states

    data = write_zarr(tmp_path / "d.zarr", lengths=(12, 9))
    config = DemoDataConfig(chunk=2, state_dims=[0])  # the episode index only
    demos = open_demos(str(data), config)
    windows = DemoWindows(demos, [0, 1], config, fit(demos, config))
    future, valid = future_states(windows, np.array([0, 11]), mean=0.0, std=1.0)
    assert future.shape == (2, 2, 5)
    assert future[0, :, 1].tolist() == [1.0, 2.0]  # frame index t + 1, t + 2: not observed
    assert future[1, :, 1].tolist() == [11.0, 11.0] and valid[1].tolist() == [False, False]


@pytest.mark.parametrize("observation", ["state", "image"])
def test_act_only_never_reads_future_frames_and_act_jepa_trains_its_image_encoder(
    tmp_path, observation
):
    from jepactl.domains.policy.method import build, pretrain_data

    data = write_zarr(tmp_path / "d.zarr", image_size=32)
    tiny = [*TINY, f"data.observation={observation}", "data.image_size=32"]
    recipe = load_recipe("policy/act-jepa-image-cpu", tiny)
    dataset, collate, _ = pretrain_data(recipe, str(data))
    model = build(recipe).train()
    batch = collate([dataset[(i, 0, 0)] for i in range(8)])
    assert ("future_images" in batch) == (observation == "image")
    model(batch)["loss"].backward()
    if observation == "image":
        assert model.context_encoder.backbone.layers[0].weight.grad.abs().sum() > 0
    only = load_recipe("policy/act-jepa-image-cpu", [*tiny, "objective.latent_weight=0"])
    assert "future_images" not in pretrain_data(only, str(data))[0][(0, 0, 0)]


def test_temporal_ensemble_weights_the_oldest_prediction_most():
    ensemble = ChunkEnsemble(envs=1, steps=3, chunk=2, dims=1, decay=1.0)
    ensemble.add(0, 0, np.array([[0.0], [10.0]]))  # made at t=0 for t=0, 1
    ensemble.add(0, 1, np.array([[20.0], [30.0]]))  # made at t=1 for t=1, 2
    w = np.exp(-np.arange(2))
    assert ensemble.action(0, 0)[0] == pytest.approx(0.0)
    assert ensemble.action(0, 1)[0] == pytest.approx((10 * w[0] + 20 * w[1]) / w.sum())


@pytest.mark.slow
def test_rollouts_are_deterministic_for_their_seeds(tmp_path):
    pytest.importorskip("gym_pusht")
    config = RolloutConfig(rollouts=2, max_steps=20, videos=1)

    def policy(observations, seeds, t):  # push towards the centre
        return np.tile([[256.0, 256.0]], (len(observations), 4, 1))

    first = run_rollouts(policy, config, 4, "state", tmp_path / "a")
    again = run_rollouts(policy, config, 4, "state", None)
    assert first == again and [e["seed"] for e in first] == [100_000, 100_001]
    assert (tmp_path / "a" / "rollout-100000.gif").is_file()


@pytest.mark.slow
def test_cli_pretrains_and_probes_rollouts_and_the_world_model(tmp_path):
    pytest.importorskip("gym_pusht")
    data = write_zarr(tmp_path / "d.zarr", lengths=(30,) * 8)
    run = tmp_path / "run"
    done = CliRunner().invoke(
        app,
        [
            "pretrain",
            "policy/act-jepa-state-cpu",
            "--data",
            str(data),
            *TINY,
            "--out",
            str(run),
            "--max-steps",
            "3",
            "--quiet",
        ],
    )
    assert done.exit_code == 0, done.output
    probed = CliRunner().invoke(
        app, ["probe", str(run), "--rollouts", "2", "probe.max_steps=10", "--json"]
    )
    assert probed.exit_code == 0, probed.output
    results = json.loads(probed.stdout)["results"]
    assert results["rollouts"] == 2 and 0.0 <= results["coverage_mean"] <= 1.0
    assert results["episode_length_mean"] <= 10
    assert results["future_state_mse"] >= 0 and "future_state_mse_from_state" in results
    assert (run / "rollouts" / "rollout-100000.gif").is_file()
    assert "state_mean" in (run / "recipe.yaml").read_text()  # the statistics are kept
