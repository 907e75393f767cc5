"""The deep linear objectives' hand-written gradients against autograd of their closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jepactl.domains.linear.deep_linear import DeepLinearModels
from jepactl.domains.linear.features import FeatureSet, Moments, TwoViewSamples, population_moments

DIM = 3


def random_moments(seed: int) -> Moments:
    """Return dense, non-diagonal covariances of a random joint Gaussian over (x, y, z)."""
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((3 * DIM, 3 * DIM))
    joint = factor @ factor.T / (3 * DIM) + 0.1 * np.eye(3 * DIM)
    x, y, z = slice(0, DIM), slice(DIM, 2 * DIM), slice(2 * DIM, 3 * DIM)
    return Moments(xx=joint[x, x], yx=joint[y, x], yy=joint[y, y], zx=joint[z, x], zz=joint[z, z])


def random_models(momentum: float, seed: int) -> DeepLinearModels:
    models = DeepLinearModels.create(
        ["jepa", "mae"],
        [1, 2, 3],
        DIM,
        "orthogonal",
        0.5,
        seed,
        momentum,
        diagonal=False,
        learning_rates={"jepa": 0.1, "mae": 0.1},
    )
    rng = np.random.default_rng(seed + 1)
    # Move away from the scaled-orthogonal init so no term vanishes by symmetry.
    models.layers += 0.3 * rng.standard_normal(models.layers.shape) * models.active
    if models.ema_layers is not None:
        # (padding slots stay the identity, as the EMA of identity layers does)
        models.ema_layers += (
            0.3 * rng.standard_normal(models.ema_layers.shape) * models.active[:, :-1]
        )
    return models


def closed_form_loss(
    layers: list[torch.Tensor], head: torch.Tensor, target: torch.Tensor, m: Moments
) -> torch.Tensor:
    """½ tr(P Σxx Pᵀ) − tr(P Σyxᵀ Tᵀ) + ½ tr(T Σyy Tᵀ) with P = V W_L···W_1, T held fixed."""
    xx, yx, yy = (torch.tensor(a) for a in (m.xx, m.yx, m.yy))
    encoder = layers[0]
    for layer in layers[1:]:
        encoder = layer @ encoder
    pred = head @ encoder
    return (
        0.5 * torch.trace(pred @ xx @ pred.T)
        - torch.trace(pred @ yx.T @ target.T)
        + 0.5 * torch.trace(target @ yy @ target.T)
    )


def autograd_gradients(models: DeepLinearModels, p: int, m: Moments) -> list[np.ndarray]:
    """Return autograd's gradient for model p's encoder layers and head (its active slots)."""
    depth = models.depths[p]
    layers = [torch.tensor(models.layers[p, s], requires_grad=True) for s in range(depth)]
    head = torch.tensor(models.layers[p, -1], requires_grad=True)
    if models.objectives[p] == "mae":
        target = torch.eye(DIM, dtype=torch.float64)
    elif models.ema_layers is not None:
        target = torch.tensor(
            np.linalg.multi_dot(
                [models.ema_layers[p, s] for s in reversed(range(depth))] + [np.eye(DIM)]
            )
        )
    else:  # StopGrad of the online encoder
        target = layers[0]
        for layer in layers[1:]:
            target = layer @ target
        target = target.detach()
    loss = closed_form_loss(layers, head, target, m)
    loss.backward()
    return [layer.grad.numpy() for layer in layers] + [head.grad.numpy()]


@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["stopgrad-target", "ema-target"])
def test_gradients_of_jepa_and_mae_equal_autograd_of_their_closed_forms(momentum):
    m = random_moments(seed=3)
    models = random_models(momentum, seed=5)
    grads = models.gradients(m.xx, m.yx)
    for p, name in enumerate(models.names):
        expected = autograd_gradients(models, p, m)
        depth = models.depths[p]
        got = [grads[p, s] for s in range(depth)] + [grads[p, -1]]
        for slot, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=f"{name} slot {slot}")


@pytest.mark.parametrize("momentum", [0.0, 0.9], ids=["stopgrad-target", "ema-target"])
def test_losses_equal_the_closed_form_evaluated_by_torch(momentum):
    m = random_moments(seed=4)
    models = random_models(momentum, seed=6)
    losses = models.losses(m.xx, m.yx, m.yy)
    for p in range(len(models.names)):
        depth = models.depths[p]
        layers = [torch.tensor(models.layers[p, s]) for s in range(depth)]
        target = torch.tensor(models.targets()[p])
        expected = closed_form_loss(layers, torch.tensor(models.layers[p, -1]), target, m)
        assert losses[p] == pytest.approx(float(expected), rel=1e-12)


def test_closed_form_with_batch_covariances_is_the_mean_loss_over_the_pairs():
    features = FeatureSet.from_lambda_rho(["a", "b", "c"], [4.0, 1.0, 2.0], [0.3, 0.9, 0.6])
    samples = TwoViewSamples.draw(features, num_pairs=64, seed=0)
    models = random_models(0.0, seed=7)
    closed = models.losses(*(getattr(samples.moments(), k) for k in ("xx", "yx", "yy")))
    encoders, targets = models.encoders(), models.targets()
    heads = models.layers[:, -1]
    for p in range(len(models.names)):
        residual = samples.x @ (heads[p] @ encoders[p]).T - samples.y @ targets[p].T
        direct = 0.5 * np.mean(np.sum(residual**2, axis=1))
        assert closed[p] == pytest.approx(direct, rel=1e-10)


def test_diagonal_storage_gives_the_dense_gradients_for_aligned_layers():
    features = FeatureSet.from_lambda_rho(["a", "b", "c"], [4.0, 1.0, 2.0], [0.3, 0.9, 0.6])
    pop = population_moments(features)
    kwargs = dict(
        objectives=["jepa", "mae"],
        depths=[1, 2, 4],
        dim=3,
        init="aligned",
        init_scale=0.05,
        seed=0,
        ema_momentum=0.0,
        learning_rates={"jepa": 0.5, "mae": 0.1},
    )
    diag = DeepLinearModels.create(**kwargs, diagonal=True)
    dense = DeepLinearModels.create(**kwargs, diagonal=False)
    rng = np.random.default_rng(0)
    # unequal diagonals, still aligned; padding slots stay the identity
    diag.layers *= 1 + 0.5 * rng.random(diag.layers.shape) * diag.active
    dense.layers = diag.algebra.dense(diag.layers)
    got = diag.algebra.dense(diag.gradients(pop.xx, pop.yx))
    np.testing.assert_allclose(
        got, dense.gradients(*(np.diag(a) for a in (pop.xx, pop.yx))), rtol=1e-12, atol=1e-15
    )
    # Only the active slots of a shallow model move; its padding stays the identity.
    diag.descend(pop.xx, pop.yx)
    np.testing.assert_array_equal(diag.layers[diag.names.index("jepa_L1"), 1:-1], 1.0)
