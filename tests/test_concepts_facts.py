"""The reversal-curse fact generator and the JSONL reader: splits, leakage, names, errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from jepactl.domains.concepts.facts import (
    FactsCollate,
    FactsDataConfig,
    FactsPretrainDataset,
    build_table,
    generate_facts,
    load_facts,
    read_jsonl,
    write_jsonl,
)
from jepactl.errors import DataError, RecipeError


def inverse(relation: str) -> str:
    return relation[:-4] if relation.endswith("_inv") else relation + "_inv"


def by_split(records):
    out = {"train": [], "atomic": [], "test": []}
    for r in records:
        out[r["split"]].append((r["head"], r["relation"], r["tail"]))
    return out


@pytest.mark.parametrize("name_share", [0, 4])
def test_held_out_reversed_facts_never_reach_the_training_split(name_share):
    cfg = FactsDataConfig(group_a=60, group_b=40, relation_pairs=3, name_share=name_share, seed=3)
    split = by_split(generate_facts(cfg))
    trained = set(split["train"]) | set(split["atomic"])
    trained_queries = {(h, r) for h, r, _ in trained}
    links = Counter(frozenset((h, t)) for h, _, t in trained)
    for head, relation, tail in split["test"]:
        assert (head, relation, tail) not in trained
        # Nor the question itself: (head, relation) is never asked with any answer in training.
        assert (head, relation) not in trained_queries
        # The two entities are linked in training by exactly one fact: the atomic inverse
        # (no twin under another relation pair gives the answer away).
        assert links[frozenset((head, tail))] == 1
        # Its exact inverse is the one atomic fact the model may reverse, and only in "atomic".
        assert (tail, inverse(relation), head) in split["atomic"]
        assert (tail, inverse(relation), head) not in split["train"]


def test_split_sizes_and_group_a_has_both_directions():
    cfg = FactsDataConfig(group_a=60, group_b=40, relation_pairs=3, seed=0)
    split = by_split(generate_facts(cfg))
    assert len(split["train"]) == 3 * 60  # 30 pairs x 2 directions x 3 relation pairs
    assert len(split["atomic"]) == len(split["test"]) == 3 * 20
    train = set(split["train"])
    assert all((t, inverse(r), h) in train for h, r, t in train)
    group_a = {h for h, _, _ in train}
    group_b = {h for h, _, _ in split["atomic"]} | {t for _, _, t in split["atomic"]}
    assert len(group_a) == 60 and len(group_b) == 40 and not group_a & group_b
    # Every entity has exactly one partner per relation pair (a random perfect matching).
    assert set(Counter(h for h, _, _ in split["train"]).values()) == {3}
    # Coin flips: both directions of the relation occur among the atomic facts.
    assert {r.endswith("_inv") for _, r, _ in split["atomic"]} == {True, False}


def test_generator_is_seeded():
    cfg = FactsDataConfig(group_a=20, group_b=10, relation_pairs=2, seed=5)
    assert generate_facts(cfg) == generate_facts(cfg)
    other = FactsDataConfig(group_a=20, group_b=10, relation_pairs=2, seed=6)
    assert generate_facts(cfg) != generate_facts(other)


def test_entangled_names_are_two_shared_tokens_and_distinct():
    k = 5
    cfg = FactsDataConfig(group_a=60, group_b=40, relation_pairs=1, name_share=k, seed=1)
    table = build_table(generate_facts(cfg), "generated")
    names = table.entities
    assert len(names) == len(set(names)) == 100
    assert all(len(n.split()) == 2 for n in names)
    first = Counter(n.split()[0] for n in names)
    last = Counter(n.split()[1] for n in names)
    assert set(first.values()) == {k} and set(last.values()) == {k}
    assert table.entity_tokens.shape == (100, 2) and bool((table.entity_lengths == 2).all())
    # 20 first + 20 last names, 2 relations, <mask>, <pad>
    assert table.num_tokens == 20 + 20 + 2 + 2


def test_name_share_that_does_not_divide_the_entities_is_a_recipe_error():
    with pytest.raises(RecipeError, match="data.name_share"):
        generate_facts(FactsDataConfig(group_a=10, group_b=5, name_share=4))


def test_jsonl_round_trip_and_table_encoding(tmp_path):
    cfg = FactsDataConfig(group_a=8, group_b=6, relation_pairs=2, seed=0)
    records = generate_facts(cfg)
    path = tmp_path / "facts.jsonl"
    write_jsonl(records, path)
    assert read_jsonl(path) == records
    table = load_facts(FactsDataConfig(path=str(path)))
    assert table.records() == records
    # Token ids: entity tokens first, then relations, then <mask> and <pad>.
    assert table.tokens[table.relation_token(torch.tensor(0))] == table.relations[0]
    assert table.tokens[table.mask_token] == "<mask>"


def test_user_jsonl_with_multi_token_names_and_default_split(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"head": "Tom  Cruise", "relation": "parent_of", "tail": "X"})
        + "\n\n"
        + json.dumps({"head": "X", "relation": "child_of", "tail": "Tom Cruise", "split": "test"})
        + "\n"
    )
    records = read_jsonl(path)
    assert records[0] == {
        "head": "Tom Cruise",
        "relation": "parent_of",
        "tail": "X",
        "split": "train",
    }
    table = load_facts(FactsDataConfig(path=str(path)))
    assert table.entities == ("Tom Cruise", "X")
    assert table.entity_lengths.tolist() == [2, 1]
    assert table.entity_tokens[1].tolist() == [2, table.pad_token]


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"head": "a", "relation": "r"}', "mine.jsonl:1: 'tail' must be a non-empty string"),
        ('{"head": "a", "relation": "r", "tail": "b", "split": "dev"}', "split 'dev' is not one"),
        ("not json", "mine.jsonl:1: not valid JSON"),
    ],
)
def test_bad_jsonl_lines_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "mine.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        read_jsonl(path)
    with pytest.raises(DataError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_pretraining_sees_train_and_atomic_facts_only():
    cfg = FactsDataConfig(group_a=20, group_b=10, relation_pairs=2, seed=0)
    table = load_facts(cfg)
    dataset = FactsPretrainDataset(table)
    # group A: 10 pairs x 2 directions x 2 relation pairs; group B: 5 pairs x 2 relation pairs
    assert len(dataset) == len(table.rows("train", "atomic")) == 40 + 10
    test_rows = set(table.rows("test").tolist())
    assert not test_rows & {dataset[(i, 0, 0)] for i in range(len(dataset))}
    batch = FactsCollate(table)([dataset[(i, 0, 0)] for i in range(4)])
    assert set(batch) == {"head", "relation", "tail"} and batch["head"].shape == (4,)
    assert batch["tail"].tolist() == table.tails[table.rows("train", "atomic")[:4]].tolist()
