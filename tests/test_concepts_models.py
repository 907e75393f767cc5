"""Concept-JEPA, its memory layer, the causal-LM baseline and the MRR metric."""

from __future__ import annotations

import json
import math

import pytest
import torch

from jepactl.domains.concepts.concept_jepa import ConceptJEPARecipe
from jepactl.domains.concepts.concept_jepa import build as build_jepa
from jepactl.domains.concepts.concept_lm import ConceptLMRecipe
from jepactl.domains.concepts.concept_lm import build as build_lm
from jepactl.domains.concepts.facts import FactsCollate, FactsPretrainDataset, load_facts
from jepactl.domains.concepts.memory import KeyValueMemory
from jepactl.domains.concepts.mrr import chance_mrr, reciprocal_ranks
from jepactl.typed_config import build_dataclass, to_dict

SMALL_DATA = {"group_a": 40, "group_b": 20, "relation_pairs": 2}


def recipe(cls, **sections):
    raw = to_dict(cls())
    for section, values in sections.items():
        raw[section].update(values)
    return build_dataclass(cls, raw)


def first_batch(table, size=16):
    dataset = FactsPretrainDataset(table)
    return FactsCollate(table)([dataset[(i, 0, 0)] for i in range(size)])


def test_reciprocal_ranks_count_strictly_better_candidates():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1], [0.5, 0.5, 0.0]])
    ranks = reciprocal_ranks(scores, torch.tensor([2, 0, 1]))
    assert ranks.tolist() == pytest.approx([0.5, 1.0, 1.0])  # a tie is not "better"
    assert chance_mrr(1) == 1.0 and chance_mrr(2) == pytest.approx(0.75)
    assert chance_mrr(4) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_top1_memory_reads_exactly_one_value_and_trains_only_that_value():
    memory = KeyValueMemory(num_slots=5, dim=4, top_k=1)
    memory.set_keys(torch.eye(4))
    query = torch.tensor([[0.0, 3.0, 0.1, 0.0]])  # closest to key 1
    out = memory(query)
    assert torch.allclose(out, memory.values[1:2])
    out.sum().backward()
    grad = memory.values.grad
    assert grad[1].abs().sum() > 0 and grad[[0, 2, 3, 4]].abs().sum() == 0
    assert memory.keys.grad is None and not memory.keys.requires_grad


def test_top2_memory_mixes_two_slots_by_softmax():
    memory = KeyValueMemory(num_slots=3, dim=2, top_k=2)
    memory.set_keys(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    query = torch.tensor([[2.0, 1.0]])
    weights = torch.softmax(torch.tensor([2.0, 1.0]) / math.sqrt(2), 0)
    expected = weights[0] * memory.values[0] + weights[1] * memory.values[1]
    assert torch.allclose(memory(query)[0], expected, atol=1e-6)


def test_memory_gives_each_entangled_entity_its_own_slot():
    data = dict(SMALL_DATA, name_share=4)
    method = build_jepa(
        recipe(
            ConceptJEPARecipe, data=data, model={"encoder": "memory", "concept_norm": "layer_norm"}
        )
    )
    assert method.memory_slot_accuracy() == 1.0
    assert not method.encoder_module.vocab_embed.weight.requires_grad  # value-only training


@pytest.mark.parametrize("model", [{}, {"encoder_depth": 1}, {"encoder": "memory"}])
def test_concept_loss_starts_at_log_candidates_and_gradients_reach_targets(model):
    torch.manual_seed(0)
    cfg = recipe(
        ConceptJEPARecipe,
        data=dict(SMALL_DATA, name_share=4 if model else 0),
        model=dict(model, embed_dim=32, predictor_depth=1, num_heads=2),
    )
    method = build_jepa(cfg)
    batch = first_batch(load_facts(cfg.data))
    out = method(batch)
    distinct = len(torch.unique(torch.cat([batch["head"], batch["tail"]])))
    assert out["candidates"].item() == distinct
    # Concepts start near zero, so every candidate is about equally likely.
    assert out["loss"].item() == pytest.approx(math.log(distinct), abs=0.05)
    out["loss"].backward()
    # No stop-gradient: the target concepts themselves are trained (methods.md §8).
    encoder = method.encoder_module
    trained = encoder.memory.values if encoder.memory is not None else encoder.vocab_embed.weight
    assert trained.grad is not None and trained.grad.abs().sum() > 0


def test_full_ranking_matches_a_brute_force_score_over_all_entities():
    torch.manual_seed(0)
    cfg = recipe(
        ConceptJEPARecipe,
        data=SMALL_DATA,
        model={"embed_dim": 32, "predictor_depth": 1, "num_heads": 2},
    )
    method = build_jepa(cfg).eval()
    table = load_facts(cfg.data)
    rows = table.rows("test")
    head, rel, tail = table.heads[rows], table.relation[rows], table.tails[rows]
    fast = method.reciprocal_ranks(head, rel, tail, chunk=7)
    with torch.no_grad():
        everything = method.encoder_module(torch.arange(len(table.entities)))
        scores = method.predict(everything[head], rel) @ everything.T
    truth = scores[torch.arange(len(rows)), tail]
    slow = 1.0 / (1 + (scores > truth[:, None]).sum(1)).float()
    assert torch.allclose(fast, slow)


def test_lm_packs_head_relation_tail_for_names_of_different_lengths(tmp_path):
    path = tmp_path / "facts.jsonl"
    facts = [("a b c", "r", "d"), ("d", "r_inv", "a b c"), ("e f", "r", "g h")]
    path.write_text(
        "".join(json.dumps({"head": h, "relation": r, "tail": t}) + "\n" for h, r, t in facts)
    )
    cfg = recipe(
        ConceptLMRecipe,
        data={"path": str(path)},
        model={"embed_dim": 16, "depth": 1, "num_heads": 2},
    )
    method = build_lm(cfg)
    table = load_facts(cfg.data)
    tokens, is_tail = method.sequences(table.heads, table.relation, table.tails)
    ids = {name: i for i, name in enumerate(table.tokens)}
    pad = table.pad_token
    assert tokens.shape == (3, 7)  # 2 * longest name (3) + relation
    assert tokens[0].tolist() == [ids["a"], ids["b"], ids["c"], ids["r"], ids["d"], pad, pad]
    assert tokens[1].tolist() == [ids["d"], ids["r_inv"], ids["a"], ids["b"], ids["c"], pad, pad]
    assert tokens[2].tolist() == [ids["e"], ids["f"], ids["r"], ids["g"], ids["h"], pad, pad]
    assert is_tail[1].tolist() == [False, False, True, True, True, False, False]
    logits, truth = method.tail_logits(table.heads, table.relation, table.tails)
    assert truth.tolist() == [ids["d"], ids["a"], ids["b"], ids["c"], ids["g"], ids["h"]]
    assert logits.shape == (6, table.num_tokens)
    out = method(FactsCollate(table)([0, 1, 2]))
    assert out["loss"].item() == pytest.approx(math.log(table.num_tokens), abs=0.1)
    assert len(method.reciprocal_ranks(table.heads, table.relation, table.tails)) == 6


def test_checkpoint_refuses_a_different_vocabulary():
    small = build_jepa(recipe(ConceptJEPARecipe, data=SMALL_DATA))
    other = build_jepa(recipe(ConceptJEPARecipe, data=dict(SMALL_DATA, seed=1)))
    assert int(small.facts_fingerprint) != int(other.facts_fingerprint)


def test_predictor_has_no_position_embedding_unless_the_recipe_asks():
    # The reference runs its causal layers over [head, relation, mask] without positions
    # (main.py: BAN_POS_ENCODING = True); model.position_embedding: true adds a learned one.
    small = {"embed_dim": 32, "predictor_depth": 1, "num_heads": 2}
    plain = build_jepa(recipe(ConceptJEPARecipe, data=SMALL_DATA, model=small))
    assert plain.predictor.pos_embed is None
    assert not any("pos_embed" in name for name, _ in plain.named_parameters())
    positioned = build_jepa(
        recipe(ConceptJEPARecipe, data=SMALL_DATA, model=dict(small, position_embedding=True))
    )
    assert positioned.predictor.pos_embed.shape == (3, 32)
    batch = first_batch(load_facts(recipe(ConceptJEPARecipe, data=SMALL_DATA).data))
    assert torch.isfinite(positioned(batch)["loss"])


def test_entity_encoder_has_no_position_embedding_unless_the_recipe_asks():
    # Nor do the reference's Wernicke layers; with one, the entangled encoder collapsed.
    data = dict(SMALL_DATA, name_share=4)
    small = {"embed_dim": 32, "predictor_depth": 1, "num_heads": 2, "encoder_depth": 2}
    plain = build_jepa(recipe(ConceptJEPARecipe, data=data, model=small))
    assert plain.encoder_module.patch_pos is None
    positioned = build_jepa(
        recipe(ConceptJEPARecipe, data=data, model=dict(small, position_embedding=True))
    )
    assert positioned.encoder_module.patch_pos.shape == (2, 32)
    # Without positions, the causal mask still tells first from last name: swapping them
    # changes the concept.
    tokens = plain.encoder_module.patch_tokens[:1].clone()
    x = plain.encoder_module.vocab_embed(torch.cat([tokens, tokens.flip(1)]))
    for block in plain.encoder_module.blocks:
        x = block(x, is_causal=True)
    assert not torch.allclose(x[0, -1], x[1, -1])


def test_untied_lm_scores_with_its_own_output_matrix():
    small = {"embed_dim": 16, "depth": 1, "num_heads": 2}
    tied = build_lm(recipe(ConceptLMRecipe, data=SMALL_DATA, model=small))
    untied = build_lm(
        recipe(ConceptLMRecipe, data=SMALL_DATA, model=dict(small, tie_embeddings=False))
    )
    assert tied.output_embed is None and tied.output_weight() is tied.vocab_embed.weight
    assert untied.output_weight() is untied.output_embed.weight
    assert untied.output_embed.weight.shape == untied.vocab_embed.weight.shape
    table = load_facts(recipe(ConceptLMRecipe, data=SMALL_DATA).data)
    out = untied(FactsCollate(table)(list(range(8))))
    out["loss"].backward()
    # The loss reaches the output matrix and the input embeddings separately.
    assert untied.output_embed.weight.grad.abs().sum() > 0
    assert untied.vocab_embed.weight.grad.abs().sum() > 0
