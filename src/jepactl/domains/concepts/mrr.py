"""Mean reciprocal rank on the train / atomic / test splits of a facts run (methods.md §8).

``jepactl probe RUN`` on a concept-JEPA or causal-LM run ranks, for a sample of each split's
facts, the correct tail against every candidate: all entities' concept embeddings for
concept-JEPA (the reference's ``--eval_full_negatives``), the whole token vocabulary at each
tail token for the language model (its token-level MRR). The "test" split holds the reversed
facts that training never saw; "atomic" holds their seen directions.
"""

from __future__ import annotations

from pathlib import Path

import torch

from jepactl.domains.concepts.facts import (
    SPLITS,
    FactTable,
    build_table,
    describe,
    load_facts,
    read_jsonl,
    write_jsonl,
)
from jepactl.errors import DataError
from jepactl.evaluate.seeds import aggregate
from jepactl.recipe import Recipe


def reciprocal_ranks(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Return 1 / rank of ``correct`` per row of ``scores`` (N, C); ties rank optimistically."""
    truth = scores.gather(1, correct.unsqueeze(1))
    return 1.0 / (1 + (scores > truth).sum(dim=1)).float()


def chance_mrr(candidates: int) -> float:
    """Return the expected MRR of a uniformly random ranking of ``candidates``: H_C / C."""
    return sum(1.0 / k for k in range(1, candidates + 1)) / candidates


def reindex(model_table: FactTable, records: list[dict[str, str]], source: str) -> FactTable:
    """Return ``records`` as a table over the model's vocabulary (unknown names are errors)."""
    entities = {name: i for i, name in enumerate(model_table.entities)}
    relations = {name: i for i, name in enumerate(model_table.relations)}
    for r in records:
        for key, known in (("head", entities), ("relation", relations), ("tail", entities)):
            if r[key] not in known:
                raise DataError(
                    f"facts file '{source}': {key} '{r[key]}' is not in the run's "
                    "training vocabulary"
                )
    own = build_table(records, source)
    ids = lambda key, known: torch.tensor([known[r[key]] for r in records])  # noqa: E731
    return FactTable(
        model_table.entities,
        model_table.relations,
        ids("head", entities),
        ids("relation", relations),
        ids("tail", entities),
        own.split,
        model_table.entity_tokens,
        model_table.entity_lengths,
        model_table.tokens,
    )


def _open_method(request, recipe: Recipe):
    from jepactl.registry import method_spec
    from jepactl.runs import load_trained_method

    if request.random_init:
        torch.manual_seed(recipe.probe.seed)
        return method_spec(recipe.method).require("build")(recipe).eval(), "random-init"
    _, method, step = load_trained_method(Path(request.run), recipe, request.checkpoint)
    return method, f"step {step}"


def _refuse_options(request) -> None:
    request.refuse_options(
        *("--test", "--shots", "--target", "--task", "--head", "--which", "--labels-fraction"),
        probe="the facts probe",
        why="it ranks the train/atomic/test splits of --data (default: the run's facts)",
    )


def run_mrr_probe(request, recipe: Recipe, kind: str) -> dict:
    """Return MRR per split (mean over ``request.seeds`` samples of ``probe_facts`` facts).

    ``kind`` names what is ranked: ``concept`` (an entity among all entities) or ``token`` (a
    tail token among the vocabulary). The model's ``reciprocal_ranks(head, relation, tail)``
    does the ranking; this function picks the facts and writes the table.
    """
    _refuse_options(request)
    model_table = load_facts(recipe.data)
    if request.data is not None:
        table, described = (
            reindex(model_table, read_jsonl(request.data), request.data),
            request.data,
        )
    else:
        table, described = model_table, describe(recipe.data)
        run = Path(request.run)
        if (
            recipe.data.path is None
            and (run / "recipe.yaml").is_file()
            and not (run / "facts.jsonl").exists()
        ):
            write_jsonl(table.records(), run / "facts.jsonl")  # the exact facts, for the record
    method, weights = _open_method(request, recipe)
    if int(method.facts_fingerprint) != model_table.fingerprint():
        raise DataError(
            f"the facts of {describe(recipe.data)} are not the ones run "
            f"'{request.run}' was trained on (the file or the generator changed)"
        )
    candidates = method.candidate_count()
    result: dict = {
        "data": described,
        "model": weights,
        "ranked": kind,
        "candidates": candidates,
        "chance_mrr": chance_mrr(candidates),
    }
    for split in SPLITS:
        rows = table.rows(split)
        if len(rows) == 0:
            continue
        scores = []
        for seed in range(request.seeds):
            pick = rows
            if len(rows) > recipe.data.probe_facts:
                order = torch.randperm(
                    len(rows), generator=torch.Generator().manual_seed(recipe.probe.seed + seed)
                )
                pick = rows[order[: recipe.data.probe_facts]]
            ranks = method.reciprocal_ranks(
                table.heads[pick], table.relation[pick], table.tails[pick]
            )
            scores.append(float(ranks.mean()))
        result.update(aggregate([{f"{split}_mrr": score} for score in scores]))
        result[f"{split}_facts"] = min(len(rows), recipe.data.probe_facts)
    slots = getattr(method, "memory_slot_accuracy", lambda: None)()
    if slots is not None:
        result["memory_slot_accuracy"] = slots
    return result
