"""DMT-JEPA's neighbour selection on hand-made feature grids, and the per-image query fix."""

from __future__ import annotations

import torch

from jepactl.domains.image.local_aggregation import (
    LocalAggregationConfig,
    LocalAggregationHead,
    neighbour_table,
    select_neighbours,
)


def test_neighbour_table_wraps_around_edges_like_the_reference() -> None:
    table, valid = neighbour_table((4, 4), 3, wrap=True)
    assert table.shape == (16, 8) and bool(valid.all())
    # Patch 0 (row 0, col 0): rows {3, 0, 1} x cols {3, 0, 1} minus itself, window order.
    assert table[0].tolist() == [15, 12, 13, 3, 1, 7, 4, 5]
    # An interior patch (row 1, col 1) sees its plain 3x3 window.
    assert sorted(table[5].tolist()) == [0, 1, 2, 4, 6, 8, 9, 10]


def test_neighbour_table_without_wrap_marks_outside_entries_invalid() -> None:
    table, valid = neighbour_table((4, 4), 3, wrap=False)
    assert valid[0].tolist() == [False, False, False, False, True, False, True, True]
    assert sorted(table[0][valid[0]].tolist()) == [1, 4, 5]
    assert bool(valid[5].all())


def test_select_neighbours_keeps_the_most_cosine_similar_candidates() -> None:
    # 3x3 grid, 2-D features. The centre patch 4 points along +x. Its neighbours point at
    # angles chosen so that the cosine ranking is 1 > 3 > 7 > 0 > the rest; scale must not
    # matter (cosine), so neighbour 0 is long but far in angle.
    angle = {0: 60.0, 1: 5.0, 2: 170.0, 3: 20.0, 5: 120.0, 6: 100.0, 7: 40.0, 8: -150.0, 4: 0.0}
    scale = {0: 10.0}
    feats = torch.zeros(1, 9, 2)
    for i, deg in angle.items():
        rad = torch.deg2rad(torch.tensor(deg))
        feats[0, i] = scale.get(i, 1.0) * torch.stack([torch.cos(rad), torch.sin(rad)])
    table, valid = neighbour_table((3, 3), 3, wrap=False)
    chosen = select_neighbours(feats, table, valid, k=4)
    assert chosen.shape == (1, 9, 4)
    assert chosen[0, 4].tolist() == [1, 3, 7, 0]  # best first
    # A corner patch only ranks its 3 in-grid neighbours first.
    corner = select_neighbours(feats, table, valid, k=3)[0, 0].tolist()
    assert sorted(corner) == [1, 3, 4]


def test_selection_is_batched_per_image() -> None:
    torch.manual_seed(0)
    feats = torch.randn(3, 16, 8)
    table, valid = neighbour_table((4, 4), 3, wrap=True)
    together = select_neighbours(feats, table, valid, k=4)
    for b in range(3):
        alone = select_neighbours(feats[b : b + 1], table, valid, k=4)
        assert torch.equal(together[b], alone[0])


def test_target_query_is_each_images_own_mean_token() -> None:
    # The reference tiles the query with cls.repeat(N, 1, 1), so image 0's targets depended on
    # the other images of the batch. Here they must not.
    torch.manual_seed(0)
    head = LocalAggregationHead((4, 4), 16, 2, LocalAggregationConfig()).eval()
    tokens = torch.randn(3, 16, 16)
    other = tokens.clone()
    other[1:] = torch.randn(2, 16, 16) * 5
    with torch.no_grad():
        a = head.aggregate_neighbours(tokens)
        b = head.aggregate_neighbours(other)
        alone = head.aggregate_neighbours(tokens[:1])
    assert torch.allclose(a[0], b[0], atol=1e-6)
    assert torch.allclose(a[0], alone[0], atol=1e-6)
    assert not torch.allclose(a[1], b[1])


def test_context_refinement_ignores_padded_tokens() -> None:
    torch.manual_seed(0)
    head = LocalAggregationHead((4, 4), 16, 2, LocalAggregationConfig()).eval()
    tokens = torch.randn(2, 6, 16)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    padded = tokens.clone()
    padded[1, 4:] = 100.0  # garbage in the padded slots
    with torch.no_grad():
        out = head.refine_context(padded, valid)
        short = head.refine_context(tokens[1:, :4], None)
    assert torch.allclose(out[1, :4], short[0], atol=1e-5)
