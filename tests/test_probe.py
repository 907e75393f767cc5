"""Probes and metrics on features with a known answer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jepactl.evaluate.metrics import accuracy, balanced_accuracy
from jepactl.evaluate.probe import knn_predict, linear_probe, stratified_fraction


def blobs(n_per_class, classes, dim, spread, seed):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 3
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=gen), labels


def test_linear_and_knn_probes_separate_gaussian_blobs():
    x, y = blobs(60, 4, 8, 0.5, seed=0)
    tx, ty = blobs(30, 4, 8, 0.5, seed=0)
    pred, _ = linear_probe(x, y, tx, ty, 4)
    assert accuracy(pred, ty) > 0.97
    assert accuracy(knn_predict(x, y, tx, 4, k=5), ty) > 0.97


def test_linear_probe_is_near_chance_on_pure_noise():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 8, generator=gen), torch.randint(0, 4, (400,), generator=gen)
    tx, ty = torch.randn(400, 8, generator=gen), torch.randint(0, 4, (400,), generator=gen)
    pred, _ = linear_probe(x, y, tx, ty, 4)
    assert accuracy(pred, ty) < 0.35


def test_balanced_accuracy_is_the_mean_per_class_recall():
    labels = torch.tensor([0] * 90 + [1] * 10)
    always_zero = torch.zeros(100, dtype=torch.long)
    assert accuracy(always_zero, labels) == pytest.approx(0.9)
    assert balanced_accuracy(always_zero, labels) == pytest.approx(0.5)


def test_labels_fraction_keeps_each_class_in_proportion():
    labels = torch.tensor([0] * 100 + [1] * 20 + [2] * 3)
    keep = stratified_fraction(labels, 0.1, seed=0)
    kept = labels[keep]
    assert [(kept == c).sum().item() for c in range(3)] == [10, 2, 1]
    assert torch.equal(keep, stratified_fraction(labels, 0.1, seed=0))


def test_knn_vote_is_weighted_by_exp_similarity_over_temperature():
    # One test point; neighbours: two of class 0 at cosine 0.6, one of class 1 at cosine 1.0.
    # A plain vote says 0; DINO's weights exp(s / 0.07) give class 1 e^(1/0.07) against
    # 2 e^(0.6/0.07), so 1 wins; at T = 10 the weights are nearly equal and 0 wins again.
    train = torch.tensor([[0.6, 0.8], [0.6, -0.8], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[1.0, 0.0]])
    vote = dict(k=3, centre=False)
    assert knn_predict(train, labels, test, 2, temperature=0.07, **vote).item() == 1
    assert knn_predict(train, labels, test, 2, temperature=10.0, **vote).item() == 0


def test_knn_is_unchanged_by_a_vector_every_sample_shares():
    # Pooled ViT features were 99.8 % one shared mean vector (benchmarks/images/DIAGNOSIS.md):
    # the kNN centres on the training mean, so adding any constant vector changes nothing,
    # while cosine on the raw features then sees every pair at similarity ~1.
    x, y = blobs(60, 4, 8, 1.5, seed=0)
    tx, ty = blobs(30, 4, 8, 1.5, seed=1)
    offset = 40 * torch.ones(8)
    plain = knn_predict(x, y, tx, 4, k=10)
    shifted = knn_predict(x + offset, y, tx + offset, 4, k=10)
    assert torch.equal(plain, shifted)
    raw_cos = F.normalize(x + offset, dim=1) @ F.normalize(tx + offset, dim=1).T
    assert raw_cos.min() > 0.95
