"""seq-JEPA (domains/views): transformations and their actions, the model, the probe, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.domains.views.method import SeqJEPA
from jepactl.domains.views.probe import r_squared
from jepactl.domains.views.sequences import SequenceCollate
from jepactl.domains.views.transforms import (
    ViewDraw,
    ViewsConfig,
    apply_views,
    draw_views,
    jitter,
    latent_dim,
    relative_actions,
)
from jepactl.recipe import load_recipe

# views/seq-jepa-cpu shrunk to a model that trains a step in well under a second.
TINY = [
    "data.image_size=16",
    "model.encoder=vit",
    "model.vit.embed_dim=32",
    "model.vit.depth=1",
    "model.vit.num_heads=2",
    "model.vit.patch_size=4",
    "model.action_dim=8",
    "model.aggregator_depth=1",
    "model.aggregator_heads=2",
    "model.predictor_hidden=32",
    "train.batch_size=8",
    "train.num_workers=0",
    "train.precision=fp32",
    "train.log_every=1",
    "probe.mlp_steps=20",
    "probe.mlp_hidden=16",
    "probe.batch_size=16",
]


def identity(b: int, v: int) -> ViewDraw:
    return ViewDraw(
        torch.zeros(b, v),
        torch.zeros(b, v, 2),
        torch.ones(b, v),
        torch.ones(b, v, 3),
        torch.zeros(b, v),
    )


def test_identity_draw_returns_the_image():
    images = torch.rand(2, 3, 8, 8)
    views = apply_views(images, identity(2, 3))
    assert views.shape == (2, 3, 3, 8, 8)
    torch.testing.assert_close(views, images[:, None].expand_as(views), atol=1e-5, rtol=0)


def test_a_quarter_turn_is_rot90_counter_clockwise_in_image_coordinates():
    images = torch.rand(1, 1, 6, 6)
    draw = identity(1, 1)
    draw.angle[:] = math.pi / 2
    turned = apply_views(images, draw)[0, 0, 0]
    # Output u reads input R(t) u: output (x, y) <- input (-y, x), i.e. out[r, c] = in[c, W-1-r].
    torch.testing.assert_close(
        turned, torch.rot90(images[0, 0], k=1, dims=(0, 1)), atol=1e-5, rtol=0
    )


def test_relative_actions_are_angle_differences_offsets_and_log_ratios():
    config = ViewsConfig(transforms=["rotation", "crop", "color"])
    draw = draw_views(config, (4, 3), torch.Generator().manual_seed(0))
    latents = draw.latent(config, channels=3)
    assert latents.shape == (4, 3, latent_dim(config, 3)) == (4, 3, 9)
    actions = relative_actions(latents, config, channels=3)
    assert actions.shape == (4, 2, 9)
    delta = draw.angle[:, 1:] - draw.angle[:, :-1]
    torch.testing.assert_close(actions[..., 0], delta.sin(), atol=1e-6, rtol=0)
    torch.testing.assert_close(actions[..., 1], delta.cos(), atol=1e-6, rtol=0)
    torch.testing.assert_close(actions[..., 2:4], draw.centre[:, 1:] - draw.centre[:, :-1])
    torch.testing.assert_close(actions[..., 4], (draw.scale[:, 1:] / draw.scale[:, :-1]).log())
    factors = draw.factors.log()
    torch.testing.assert_close(actions[..., 5:8], factors[:, 1:] - factors[:, :-1])
    torch.testing.assert_close(actions[..., 8], draw.hue[:, 1:] - draw.hue[:, :-1])


def test_draws_are_seeded_and_crops_stay_inside_the_image():
    config = ViewsConfig(crop_scale=(0.1, 0.5))
    a = draw_views(config, (64, 4), torch.Generator().manual_seed(3))
    b = draw_views(config, (64, 4), torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.centre, b.centre)
    assert bool((a.centre.abs().amax(-1) + a.scale <= 1 + 1e-6).all())
    area = a.scale**2
    assert 0.1 - 1e-6 <= float(area.min()) and float(area.max()) <= 0.5 + 1e-6
    assert float(a.angle.abs().max()) <= math.pi


def test_disabled_transformations_are_identity_and_leave_the_latent():
    config = ViewsConfig(transforms=["color"])
    draw = draw_views(config, (2, 2), torch.Generator().manual_seed(0))
    assert bool((draw.angle == 0).all()) and bool((draw.scale == 1).all())
    assert latent_dim(config, channels=1) == 2  # greyscale: brightness and contrast only


def test_jitter_scales_brightness_and_the_hue_shift_keeps_luma():
    grey = torch.full((1, 3, 4, 4), 0.25)
    bright = jitter(grey, torch.tensor([[2.0, 1.0, 1.0]]), torch.zeros(1))
    torch.testing.assert_close(bright, torch.full_like(grey, 0.5))
    colour = 0.3 + 0.4 * torch.rand(1, 3, 4, 4)
    shifted = jitter(colour, torch.ones(1, 3), torch.tensor([0.05]))
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    torch.testing.assert_close((shifted * luma).sum(1), (colour * luma).sum(1), atol=1e-4, rtol=0)
    assert float((shifted - colour).abs().max()) > 1e-3


def test_collate_makes_batch_first_sequences_from_the_step_seed():
    recipe = load_recipe("views/seq-jepa-cpu", TINY)
    collate = SequenceCollate(recipe.views, recipe.data)
    samples = [{"images": torch.rand(3, 16, 16), "batch_seed": 11} for _ in range(5)]
    batch = collate(samples)
    assert batch["views"].shape == (5, 4, 3, 16, 16)
    assert batch["latents"].shape == (5, 4, 9) and batch["actions"].shape == (5, 3, 9)
    torch.testing.assert_close(
        batch["actions"], relative_actions(batch["latents"], recipe.views, 3)
    )
    again = collate(samples)
    torch.testing.assert_close(batch["views"], again["views"])
    other = collate([dict(s, batch_seed=12) for s in samples])
    assert not torch.equal(batch["views"], other["views"])


def test_the_prediction_depends_on_the_action_only_with_action_conditioning():
    torch.manual_seed(0)
    for conditioned in (True, False):
        recipe = load_recipe(
            "views/seq-jepa-cpu", [*TINY, f"model.action_conditioning={str(conditioned).lower()}"]
        )
        model = SeqJEPA(recipe).eval()
        agg = torch.randn(4, model.agg_token.shape[-1])
        assert (model.action_embedding is not None) == conditioned
        reads = [agg]
        if conditioned:
            reads.append(model.action_embedding(torch.randn(4, 9)))
        width = model.predictor[0].in_features
        assert width == sum(r.shape[-1] for r in reads)
        # Aggregates: with actions, the tokens carry them (different actions, different output).
        views = torch.randn(2, 3, 3, 16, 16)
        a, b = torch.randn(2, 2, 9), torch.randn(2, 2, 9)
        with torch.no_grad():
            differ = not torch.allclose(model.represent(views, a), model.represent(views, b))
        assert differ == conditioned


def test_training_step_loss_is_one_minus_cosine_and_gradients_reach_the_parts():
    recipe = load_recipe("views/seq-jepa-cpu", TINY)
    model = SeqJEPA(recipe).train()
    collate = SequenceCollate(recipe.views, recipe.data)
    batch = collate([{"images": torch.rand(3, 16, 16), "batch_seed": 1} for _ in range(6)])
    out = model(batch)
    assert 0.0 <= float(out["loss"].detach()) <= 2.0 and out["embeddings"].shape == (6, 32 + 8)
    out["loss"].backward()
    for part in (model.online_encoder, model.action_embedding, model.aggregator, model.predictor):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.ema_pairs() == [(model.online_encoder, model.target_encoder)]


def test_r_squared_is_one_for_a_perfect_fit_and_zero_for_the_mean():
    target = torch.randn(50, 3)
    assert r_squared(target, target, {"a": [0]})[""] == pytest.approx(1.0)
    mean = target.mean(0).expand_as(target)
    assert r_squared(mean, target, {"a": [0, 1]})["_a"] == pytest.approx(0.0, abs=1e-6)


def image_folder(root, per_class: int = 12):
    for c, colour in enumerate(("red", "blue")):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20, 20), colour).save(folder / f"{i}.png")
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def pretrain(tmp_path, *args, steps: int = 2):
    """Pretrain the tiny recipe on a 24-image folder; return (result, run folder)."""
    data = image_folder(tmp_path / "images")
    run = tmp_path / "run"
    result = invoke(
        "pretrain",
        "views/seq-jepa-cpu",
        "--data",
        data,
        *TINY,
        *args,
        "--out",
        run,
        "--max-steps",
        steps,
        "--quiet",
        "--json",
    )
    return result, run


@pytest.mark.slow
def test_cli_pretrains_then_probes_views_and_transformations(tmp_path):
    done, run = pretrain(tmp_path)
    assert done.exit_code == 0, done.output
    probed = invoke("probe", run, "--views", "1,2", "--json")
    assert probed.exit_code == 0, probed.output
    results = json.loads(probed.stdout)["results"]
    for key in (
        "top1_views1",
        "top1_views2",
        "relative_r2",
        "relative_r2_rotation",
        "relative_r2_crop",
        "relative_r2_color",
        "individual_r2",
    ):
        assert key in results and f"{key}_per_seed" in results
    assert 0.0 <= results["top1_views1"] <= 1.0
    assert results["train_samples"] + results["test_samples"] == 24
    random = invoke("probe", run, "--random-init", "--views", "1", "--json")
    assert random.exit_code == 0, random.output
    assert json.loads(random.stdout)["results"]["encoder"] == "random-init-context"


@pytest.mark.parametrize(
    "args, message",
    [
        (["views.seq_len=0"], "recipe key 'views.seq_len': must be at least 1, got 0"),
        (["views.transforms=[rotation,blur]"], "unknown transformation 'blur'"),
        (["train.batch_size=64"], "has 24 images, fewer than one batch (train.batch_size=64)"),
    ],
)
def test_bad_recipes_and_too_little_data_are_one_line_user_errors(tmp_path, args, message):
    result, _ = pretrain(tmp_path, *args, steps=1)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_probe_views_above_the_limit_is_a_one_line_user_error(tmp_path):
    done, run = pretrain(tmp_path, steps=1)
    assert done.exit_code == 0, done.output
    result = invoke("probe", run, "--views", "1,20")
    assert result.exit_code == 2, result.output
    assert "--views 20: a probe sequence has 1 to probe.max_views=16 views" in result.output


@pytest.mark.slow
def test_resume_makes_the_same_views_and_the_same_loss_curve(tmp_path):
    data = image_folder(tmp_path / "images")
    base = ["pretrain", "views/seq-jepa-cpu", "--data", data, *TINY, "train.checkpoint_every=2"]
    assert invoke(*base, "--out", tmp_path / "a", "--max-steps", 4, "--quiet").exit_code == 0
    assert invoke(*base, "--out", tmp_path / "b", "--max-steps", 2, "--quiet").exit_code == 0
    resumed = invoke("pretrain", tmp_path / "b", "--resume", "--quiet", "--max-steps", 4)
    assert resumed.exit_code == 0, resumed.output
    losses = [
        [json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("a", "b")
    ]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-5)
