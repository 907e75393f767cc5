"""SAR-JEPA end to end on tiny synthetic chips: targets, loss on masked patches, few-shot probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jepactl.domains.sar import method as sar_jepa
from jepactl.domains.sar.gradient_targets import GradientByRatio, patchify
from jepactl.evaluate.fewshot import FewShotProbeConfig, draw_shots, train_head
from jepactl.evaluate.probe import run_probe
from jepactl.methods.probe_request import ProbeRequest
from jepactl.nn.vit import gather_tokens
from jepactl.recipe import load_recipe
from jepactl.train import pretrain

TINY_SAR = [
    "data.crop_size=24",
    "data.image_size=16",
    "model.patch_size=4",
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "predictor.embed_dim=16",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "mask.window_size=2",
    "mask.mask_ratio=0.5",
    "target.gradient_scales=[1,2]",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.log_every=1",
    "train.precision=fp32",
    "optim.warmup_steps=1",
    "probe.epochs=5",
    "probe.finetune_epochs=1",
    "probe.batch_size=8",
]


def speckled_chips(root: Path, per_class: int = 4) -> Path:
    """Two classes (bright square, bright bar) under Gamma speckle, 28-32 px chips."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(("bar", "square")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                size = 28 + i
                clean = np.full((size, size), 0.15)
                mid = size // 2
                if label:
                    clean[mid - 4 : mid + 4, mid - 4 : mid + 4] = 0.8
                else:
                    clean[mid - 1 : mid + 1, mid - 8 : mid + 8] = 0.8
                speckle = rng.gamma(4.0, 1 / 4.0, clean.shape)
                pixels = np.clip(clean * speckle * 255, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny(kind: str, max_steps: int = 2, extra=()) -> sar_jepa.SarJEPARecipe:
    return load_recipe(
        "sar/sar-jepa-cpu",
        [*TINY_SAR, f"target.kind={kind}", f"train.max_steps={max_steps}", *extra],
    )


def one_batch(recipe, data: Path) -> dict:
    dataset, collate, _ = sar_jepa.pretrain_data(recipe, str(data))
    return collate([dataset[(i, 10 + i, 3)] for i in range(4)])


def test_the_loss_is_the_mse_on_masked_patches_of_the_gradient_targets(tmp_path: Path) -> None:
    data = speckled_chips(tmp_path)
    recipe = tiny("gradient")
    torch.manual_seed(0)
    method = sar_jepa.build(recipe).eval()
    batch = one_batch(recipe, data)
    out = method(batch)
    targets = patchify(GradientByRatio((1, 2))(batch["images"]), 4)
    assert targets.shape == (4, 16, 2 * 16)
    from jepactl.masks import LocalWindowMasks

    masks = LocalWindowMasks(batch["windows"], batch["masked"])
    predicted = method.decoder(
        method.encode_windows(batch["images"], masks), masks.windows.flatten(0, 1)
    )
    wanted = gather_tokens(targets, masks.windows).flatten(0, 1)
    keep = masks.masked.flatten(0, 1)
    expected = ((predicted[keep] - wanted[keep]) ** 2).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert method.ema_pairs() == [] and method.encoder("target") is method.encoder("context")


def test_masked_patches_reach_the_encoder_only_as_mask_tokens(tmp_path: Path) -> None:
    data = speckled_chips(tmp_path)
    recipe = tiny("pixels")
    torch.manual_seed(0)
    method = sar_jepa.build(recipe).eval()
    batch = one_batch(recipe, data)
    from jepactl.masks import LocalWindowMasks

    masks = LocalWindowMasks(batch["windows"], batch["masked"])
    # Change the pixels of one masked patch of sample 0, window 0: the encoding is unchanged.
    patch = int(masks.windows[0, 0][masks.masked[0, 0]][0])
    changed = batch["images"].clone()
    row, col = divmod(patch, 4)
    changed[0, :, row * 4 : (row + 1) * 4, col * 4 : (col + 1) * 4] += 5.0
    with torch.no_grad():
        before = method.encode_windows(batch["images"], masks)
        after = method.encode_windows(changed, masks)
    assert torch.allclose(before[0], after[0], atol=1e-5)


def test_normalised_inputs_still_get_gradient_targets_of_the_amplitude(tmp_path: Path) -> None:
    recipe = tiny("gradient", extra=["data.intensity=mean_std", "data.mean=0.3", "data.std=0.2"])
    method = sar_jepa.build(recipe)
    amplitude = torch.rand(2, 1, 16, 16)
    targets = method.patch_targets((amplitude - 0.3) / 0.2)
    assert torch.allclose(targets, patchify(GradientByRatio((1, 2))(amplitude), 4), atol=1e-4)


def test_ema_target_arm_pretrains_with_an_ema_encoder(tmp_path: Path) -> None:
    data = speckled_chips(tmp_path)
    recipe = tiny("ema", extra=["loss.kind=smooth_l1", "loss.target_norm=layer_norm"])
    recipe.data.path = str(data)
    result = pretrain(recipe, tmp_path / "ema", quiet=True)
    assert result.finished and np.isfinite(result.last_loss)
    method = sar_jepa.build(recipe)
    assert method.ema_pairs() == [(method.context_encoder, method.target_encoder)]


def test_few_shot_draws_k_per_class_and_the_head_fits_separable_features() -> None:
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)
    picked = draw_shots(labels, 3, seed=4)
    assert torch.bincount(labels[picked]).tolist() == [3, 3, 3]
    assert torch.equal(picked, draw_shots(labels, 3, seed=4))
    assert not torch.equal(picked, draw_shots(labels, 3, seed=5))
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=gen) * 4
    feats = centres[labels] + torch.randn(len(labels), 16, generator=gen)
    head = train_head(feats, labels, 3, FewShotProbeConfig(epochs=60, lr=1e-2), seed=0)
    assert isinstance(head.norm, torch.nn.BatchNorm1d) and not head.norm.affine
    with torch.no_grad():
        assert (head(feats).argmax(1) == labels).float().mean() == 1.0


def test_pretrain_then_few_shot_probe_reports_mean_and_std_over_seeds(tmp_path: Path) -> None:
    data = speckled_chips(tmp_path)
    recipe = tiny("gradient", max_steps=2)
    recipe.data.path = str(data)
    run = tmp_path / "run"
    assert pretrain(recipe, run, quiet=True).finished
    result = run_probe(ProbeRequest(run, shots=2, seeds=3, head="all"))
    assert result["shots"] == 2 and result["seeds"] == 3
    assert result["train_pool"] == 8 and result["test_samples"] == 8
    for key in ("linear_accuracy", "knn_accuracy", "finetune_accuracy"):
        values = result[f"{key}_per_seed"]
        assert len(values) == 3 and all(0 <= v <= 1 for v in values)
        assert result[key] == pytest.approx(float(np.mean(values)), abs=1e-12)
        assert result[f"{key}_std"] == pytest.approx(float(np.std(values, ddof=1)), abs=1e-12)
    random = run_probe(ProbeRequest(run, shots=2, seeds=2, random_init=True))
    assert random["encoder"] == "random-init" and "finetune_accuracy" not in random
