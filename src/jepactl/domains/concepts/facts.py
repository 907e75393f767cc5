"""Relational facts (head, relation, tail, split): the seeded reversal-curse generator and JSONL.

The generator follows Wang & Sun, "Is the Reversal Curse a Binding Problem?" (methods.md §8,
``data_gen_reversal.ipynb``): for each relation pair (r, r_inv) the entities of group A are
randomly paired and *both* directions go into training ("train"), which teaches inversion;
group B is paired the same way but only one direction, chosen by a coin flip, is trained
("atomic") and its reverse is held out ("test"). Every entity is one token (``name_share: 0``)
or, in the entangled variant, two tokens ``f_i l_j`` (first and last name) each shared by
``name_share`` entities, so token identity no longer equals concept identity.

A fact file is JSONL, one object per line: ``{"head", "relation", "tail", "split"}``; an
entity's name is its tokens separated by spaces, so a user's multi-token names work as they are.
Facts become integer tensors once (:class:`FactTable`); the model holds the entity -> token table
and batches carry only (head, relation, tail) indices.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from jepactl.data.sampling import SampleKey
from jepactl.errors import DataError, RecipeError

SPLITS = ("train", "atomic", "test")
TRAINED_SPLITS = ("train", "atomic")  # what pretraining sees; "test" is held out
MASK_TOKEN, PAD_TOKEN = "<mask>", "<pad>"


@dataclass
class FactsDataConfig:
    """Where facts come from: a JSONL file, or (``path: null``) the seeded generator's keys."""

    path: str | None = None  # JSONL facts file; null generates them from the keys below
    group_a: int = 2000  # entities whose facts are trained in both directions
    group_b: int = 1200  # entities trained one way; the reversed facts are the test split
    relation_pairs: int = 6  # (r_i, r_i_inv) pairs; each entity has one partner per pair
    name_share: int = 0  # 0: one token per entity; k > 0: two tokens, each shared by k entities
    seed: int = 0
    probe_facts: int = 1000  # facts per split that `jepactl probe` ranks (all if fewer)


@dataclass(frozen=True)
class FactTable:
    """Facts as integer arrays over a vocabulary of entities, relations and tokens."""

    entities: tuple[str, ...]  # entity names; a name's tokens are separated by spaces
    relations: tuple[str, ...]
    heads: torch.Tensor  # (N,) entity index
    relation: torch.Tensor  # (N,) relation index
    tails: torch.Tensor  # (N,) entity index
    split: torch.Tensor  # (N,) index into SPLITS
    entity_tokens: torch.Tensor  # (E, P) token ids, right-padded with the pad id
    entity_lengths: torch.Tensor  # (E,) tokens per entity
    tokens: tuple[str, ...]  # entity tokens, then relations, then <mask>, <pad>

    def __len__(self) -> int:
        return len(self.heads)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def relation_token(self, relation: torch.Tensor) -> torch.Tensor:
        """Return token ids of relation indices (relations follow the entity tokens)."""
        return relation + self.num_tokens - 2 - len(self.relations)

    @property
    def mask_token(self) -> int:
        return self.num_tokens - 2

    @property
    def pad_token(self) -> int:
        return self.num_tokens - 1

    def fingerprint(self) -> int:
        """Return a 63-bit hash of the facts and vocabulary: a run's models store it, so a
        checkpoint is never evaluated against facts it was not trained on."""
        digest = hashlib.sha256("\n".join(self.entities + ("|",) + self.relations).encode())
        for column in (self.heads, self.relation, self.tails, self.split):
            digest.update(column.numpy().astype(np.int64).tobytes())
        return int.from_bytes(digest.digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF

    def rows(self, *splits: str) -> torch.Tensor:
        """Return the indices of the facts in ``splits``."""
        wanted = torch.tensor([SPLITS.index(s) for s in splits])
        return torch.isin(self.split, wanted).nonzero().flatten()

    def records(self) -> list[dict[str, str]]:
        """Return the facts as JSONL-ready dicts (head, relation, tail, split)."""
        return [
            {
                "head": self.entities[h],
                "relation": self.relations[r],
                "tail": self.entities[t],
                "split": SPLITS[s],
            }
            for h, r, t, s in zip(
                self.heads.tolist(),
                self.relation.tolist(),
                self.tails.tolist(),
                self.split.tolist(),
            )
        ]


# ------------------------------------------------------------------------------- generator


def entity_names(count: int, name_share: int, group_a: int, rng: np.random.Generator) -> list[str]:
    """Return ``count`` distinct entity names (one token, or two shared tokens when entangled)."""
    if name_share == 0:
        return [f"s_{i}" if i < group_a else f"t_{i - group_a}" for i in range(count)]
    if count % name_share:
        raise RecipeError(
            f"recipe key 'data.name_share': {name_share} must divide the number "
            f"of entities (data.group_a + data.group_b = {count})"
        )
    names = count // name_share
    if names < name_share:
        raise RecipeError(
            f"recipe key 'data.name_share': {name_share} is too large for "
            f"{count} entities (each name token would repeat within a name)"
        )
    first = np.repeat(np.arange(names), name_share)
    last = rng.permutation(first)
    # A random matching of first and last names, like the reference's rand_matching: swap
    # away repeated (first, last) pairs until every entity has a distinct name.
    for _ in range(1000):
        _, where, counts = np.unique(first * names + last, return_index=True, return_counts=True)
        clash = where[counts > 1]
        if len(clash) == 0:
            break
        for i, j in zip(clash, rng.integers(0, count, len(clash))):
            last[i], last[j] = last[j], last[i]  # a swap keeps every name's count at k
    else:  # pragma: no cover - needs an adversarial seed
        raise RecipeError("could not draw distinct entity names; change data.seed")
    order = rng.permutation(count)
    return [f"f_{first[i]} l_{last[i]}" for i in order]


def generate_facts(cfg: FactsDataConfig) -> list[dict[str, str]]:
    """Return the reversal-curse facts for ``cfg``'s keys, seeded (methods.md §8)."""
    for key in ("group_a", "group_b", "relation_pairs"):
        if getattr(cfg, key) < (2 if key != "relation_pairs" else 1):
            raise RecipeError(f"recipe key 'data.{key}' is too small: {getattr(cfg, key)}")
    if cfg.name_share < 0:
        raise RecipeError(f"recipe key 'data.name_share' must be >= 0, got {cfg.name_share}")
    rng = np.random.default_rng(cfg.seed)
    names = entity_names(cfg.group_a + cfg.group_b, cfg.name_share, cfg.group_a, rng)
    group_a = np.arange(cfg.group_a)
    group_b = np.arange(cfg.group_a, cfg.group_a + cfg.group_b)
    facts: dict[str, list[tuple[int, str, int]]] = {s: [] for s in SPLITS}
    partnered: set[tuple[int, int]] = set()
    for i in range(cfg.relation_pairs):
        rel, inv = f"r_{i}", f"r_{i}_inv"
        for e1, e2 in random_pairing(group_a, rng, partnered):
            facts["train"] += [(e1, rel, e2), (e2, inv, e1)]
        pairs = random_pairing(group_b, rng, partnered)
        forward_trained = rng.random(len(pairs)) < 0.5
        for (e1, e2), forward in zip(pairs, forward_trained):
            seen, held = (
                ((e1, rel, e2), (e2, inv, e1)) if forward else ((e2, inv, e1), (e1, rel, e2))
            )
            facts["atomic"].append(seen)
            facts["test"].append(held)
    return [
        {"head": names[h], "relation": r, "tail": names[t], "split": split}
        for split in SPLITS
        for h, r, t in facts[split]
    ]


def random_pairing(
    entities: np.ndarray, rng: np.random.Generator, partnered: set[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Return a random perfect matching of ``entities`` that repeats no pair in ``partnered``.

    One entity is left out when their count is odd. Unlike the reference, two entities are
    partners under at most one relation pair: otherwise a held-out fact (x r_i y) could have
    a trained twin (x r_j y) under another relation, a shortcut around the reversal. Repeated
    pairs are repaired by swapping partners with a random other pair; ``partnered`` is updated.
    """
    order = rng.permutation(entities)
    order = order[: len(order) - len(order) % 2].reshape(-1, 2)
    for _ in range(100):
        clash = [i for i, (a, b) in enumerate(order) if (min(a, b), max(a, b)) in partnered]
        if not clash:
            break
        for i, j in zip(clash, rng.integers(0, len(order), len(clash))):
            order[i, 1], order[j, 1] = order[j, 1], order[i, 1]
    else:
        raise RecipeError(
            f"cannot pair {len(entities)} entities without repeating partners "
            "across relation pairs: raise data.group_a/group_b or lower "
            "data.relation_pairs"
        )
    partnered.update((int(min(a, b)), int(max(a, b))) for a, b in order)
    return [(int(a), int(b)) for a, b in order]


# ------------------------------------------------------------------------------- JSONL


def write_jsonl(records: list[dict[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def read_jsonl(path: str | Path) -> list[dict[str, str]]:
    """Return the facts of a JSONL file; ``split`` defaults to ``train``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"facts file '{path}' does not exist")
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(item, dict):
                raise DataError(f"{path}:{number}: expected an object with head, relation, tail")
            for key in ("head", "relation", "tail"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    raise DataError(f"{path}:{number}: '{key}' must be a non-empty string")
            split = item.get("split", "train")
            if split not in SPLITS:
                raise DataError(
                    f"{path}:{number}: split '{split}' is not one of {', '.join(SPLITS)}"
                )
            records.append(
                {
                    "head": " ".join(item["head"].split()),
                    "relation": item["relation"].strip(),
                    "tail": " ".join(item["tail"].split()),
                    "split": split,
                }
            )
    if not records:
        raise DataError(f"facts file '{path}' holds no facts")
    return records


# ------------------------------------------------------------------------------- tables


def build_table(records: list[dict[str, str]], source: str) -> FactTable:
    """Return the integer table of ``records``; vocabularies in order of first appearance."""
    entities: dict[str, int] = {}
    relations: dict[str, int] = {}
    for r in records:
        entities.setdefault(r["head"], len(entities))
        relations.setdefault(r["relation"], len(relations))
        entities.setdefault(r["tail"], len(entities))
    names = list(entities)
    token_ids: dict[str, int] = {}
    for name in names:
        for token in name.split():
            token_ids.setdefault(token, len(token_ids))
    longest = max(len(n.split()) for n in names)
    if longest > 8:
        raise DataError(f"facts in '{source}': an entity name has {longest} tokens (at most 8)")
    tokens = list(token_ids) + list(relations) + [MASK_TOKEN, PAD_TOKEN]
    pad = len(tokens) - 1
    entity_tokens = torch.full((len(names), longest), pad, dtype=torch.long)
    lengths = torch.zeros(len(names), dtype=torch.long)
    for i, name in enumerate(names):
        ids = [token_ids[t] for t in name.split()]
        entity_tokens[i, : len(ids)] = torch.tensor(ids)
        lengths[i] = len(ids)
    column = lambda key, table: torch.tensor([table[r[key]] for r in records])  # noqa: E731
    return FactTable(
        tuple(names),
        tuple(relations),
        column("head", entities),
        column("relation", relations),
        column("tail", entities),
        torch.tensor([SPLITS.index(r["split"]) for r in records]),
        entity_tokens,
        lengths,
        tuple(tokens),
    )


@lru_cache(maxsize=4)
def _cached_table(
    path: str | None,
    mtime: float,
    group_a: int,
    group_b: int,
    relation_pairs: int,
    name_share: int,
    seed: int,
) -> FactTable:
    if path is None:
        cfg = FactsDataConfig(None, group_a, group_b, relation_pairs, name_share, seed)
        return build_table(generate_facts(cfg), "generated")
    return build_table(read_jsonl(path), path)


def load_facts(cfg: FactsDataConfig, path: str | None = None) -> FactTable:
    """Return the facts of ``path`` (default ``cfg.path``), or generated ones when it is null.

    The model's vocabulary comes from this table, so ``build(recipe)`` calls it too; a cache keeps
    the generator from running twice in one process.
    """
    path = cfg.path if path is None else path
    if path is not None and str(path).startswith("builtin:"):
        raise DataError(f"'{path}' is not a facts file (use a .jsonl path, or none to generate)")
    mtime = Path(path).stat().st_mtime if path is not None and Path(path).is_file() else 0.0
    return _cached_table(
        None if path is None else str(path),
        mtime,
        cfg.group_a,
        cfg.group_b,
        cfg.relation_pairs,
        cfg.name_share,
        cfg.seed,
    )


def describe(cfg: FactsDataConfig) -> str:
    if cfg.path is not None:
        return str(cfg.path)
    kind = (
        "single-token" if cfg.name_share == 0 else f"entangled (names shared by {cfg.name_share})"
    )
    return (
        f"generated {kind}: {cfg.group_a}+{cfg.group_b} entities, "
        f"{cfg.relation_pairs} relation pairs, seed {cfg.seed}"
    )


# ------------------------------------------------------------------------------- datasets


@dataclass
class FactsSource:
    """What the trainer reports about its input: generated facts skip nothing."""

    description: str
    skipped: tuple[str, ...] = ()


class FactsPretrainDataset(Dataset):
    """The trained facts (train + atomic), indexed by ``SampleKey``; returns a fact's row."""

    def __init__(self, table: FactTable) -> None:
        self.rows = table.rows(*TRAINED_SPLITS)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: SampleKey | int) -> int:
        index = key[0] if isinstance(key, tuple) else key
        return int(self.rows[index])


class FactsCollate:
    """Gather a batch's (head, relation, tail) indices with one tensor index (picklable)."""

    def __init__(self, table: FactTable) -> None:
        self.heads, self.relation, self.tails = table.heads, table.relation, table.tails

    def __call__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        index = torch.tensor(rows)
        return {
            "head": self.heads[index],
            "relation": self.relation[index],
            "tail": self.tails[index],
        }


class FactsEvalDataset(Dataset):
    """One split as a labelled dataset: x = (head, relation) indices, y = tail entity index."""

    def __init__(self, table: FactTable, split: str | None) -> None:
        self.rows = table.rows(*(SPLITS if split is None else (split,)))
        self.table = table
        self.labels = table.tails[self.rows]
        self.classes = list(table.entities)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.rows[i]
        return torch.stack([self.table.heads[row], self.table.relation[row]]), int(self.labels[i])


def pretrain_facts(cfg: FactsDataConfig, path: str | None):
    """Return (dataset, collate, source): the contract's ``pretrain_data`` for fact methods."""
    table = load_facts(cfg, path)
    if len(table.rows(*TRAINED_SPLITS)) == 0:
        raise DataError(f"facts in '{describe(cfg)}' have no train or atomic split to train on")
    return FactsPretrainDataset(table), FactsCollate(table), FactsSource(describe(cfg))


def pretrain_data(recipe, path: str | None):
    """Method hook shared by the fact methods: (train + atomic facts, collate, source)."""
    return pretrain_facts(recipe.data, path)


# Why `jepactl probe --labels` does not apply (methods' ``labels_from``).
LABELS_FROM = (
    "its labels are each fact's tail entity: pass a JSONL facts file as --data FACTS.jsonl"
)


def eval_data(
    recipe, path: str | None, split: str | None, augment: bool = False, seed: int = 0
) -> "FactsEvalDataset":
    """Method hook: one split as a labelled dataset, x = (head, relation), y = tail entity."""
    return FactsEvalDataset(load_facts(recipe.data, path), split)


def has_split(recipe, path: str | None, split: str) -> bool:
    return split in SPLITS and len(load_facts(recipe.data, path).rows(split)) > 0


def main(argv: list[str] | None = None) -> None:
    """Write generated facts: ``python -m jepactl.domains.concepts.facts OUT.jsonl [...]``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path)
    defaults = FactsDataConfig()
    for key in ("group_a", "group_b", "relation_pairs", "name_share", "seed"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=getattr(defaults, key))
    args = parser.parse_args(argv)
    cfg = FactsDataConfig(
        None, args.group_a, args.group_b, args.relation_pairs, args.name_share, args.seed
    )
    records = generate_facts(cfg)
    write_jsonl(records, args.out)
    print(f"wrote {len(records)} facts to {args.out}")


if __name__ == "__main__":
    main()
