"""Feature-subset masks (masks/feature_subsets.py) and the feature tokenizer."""

from __future__ import annotations

import torch

from jepactl.masks import FeatureMaskConfig, FeatureSubsetMask
from jepactl.nn.feature_tokenizer import FeatureTokenizer


def test_targets_come_from_features_outside_the_context():
    sampler = FeatureSubsetMask(14, FeatureMaskConfig())
    masks = sampler(64, torch.Generator().manual_seed(0))
    b, c = masks.context.shape
    _, m, t = masks.targets.shape
    assert (b, m) == (64, 4) and c + t <= 14
    assert 2 <= c <= 5 and 2 <= t <= 9  # round(14 * share) bounds of methods.md §9
    # Context rows hold distinct features, and no target feature is in the row's context.
    assert all(len(set(row.tolist())) == c for row in masks.context)
    overlap = (masks.targets[:, :, :, None] == masks.context[:, None, None, :]).any()
    assert not bool(overlap)
    assert int(masks.targets.max()) < 14 and int(masks.targets.min()) >= 0


def test_masks_are_a_function_of_the_batch_seed_and_differ_per_row():
    sampler = FeatureSubsetMask(10, FeatureMaskConfig())
    a = sampler(32, torch.Generator().manual_seed(7))
    b = sampler(32, torch.Generator().manual_seed(7))
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert len({tuple(sorted(r.tolist())) for r in a.context}) > 16


def test_tiny_tables_still_get_a_context_and_a_target():
    masks = FeatureSubsetMask(2, FeatureMaskConfig(context_share=(0.9, 1.0)))(
        8, torch.Generator().manual_seed(0)
    )
    assert masks.context.shape == (8, 1) and masks.targets.shape == (8, 4, 1)


def test_feature_tokenizer_numeric_is_affine_and_categories_are_per_feature():
    tok = FeatureTokenizer(n_numeric=2, cardinalities=[3, 4], dim=8)
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [2.0, 1.0, 2.0, 0.0]])
    out = tok(x)
    assert out.shape == (2, 4, 8)
    w, b = tok.numeric_weight, tok.feature_bias
    assert torch.allclose(out[1, 0], 2.0 * w[0] + b[0])
    assert torch.allclose(out[0, 2], tok.category_embed.weight[2] + b[2])
    assert torch.allclose(out[0, 3], tok.category_embed.weight[3 + 3] + b[3])  # offset by 3
    assert tok.position_table(8).shape == (4, 8)
