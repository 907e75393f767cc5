"""`jepactl pretrain concepts/...` then `jepactl probe RUN`: the MRR table end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jepactl.cli import app

TINY = [
    "data.group_a=40",
    "data.group_b=20",
    "data.relation_pairs=2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "train.batch_size=16",
    "train.precision=fp32",
    "train.log_every=10",
    "optim.warmup_steps=5",
    "optim.lr=1e-2",
    "optim.final_lr=1e-2",
    "optim.weight_decay=0.0",
    "optim.final_weight_decay=0.0",
]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def probe_json(run, *extra):
    result = invoke("probe", run, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


@pytest.mark.slow
def test_concept_jepa_memorises_its_facts_and_probe_prints_every_split(tmp_path):
    run = tmp_path / "jepa"
    result = invoke(
        "pretrain",
        "concepts",
        "--out",
        run,
        "--max-steps",
        160,
        "--quiet",
        *TINY,
        "model.predictor_depth=1",
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert "momentum" not in records[0]  # no EMA target, so no EMA momentum is logged
    table = probe_json(run)
    assert table["ranked"] == "concept" and table["candidates"] == 60
    assert {"train_mrr", "atomic_mrr", "test_mrr"} <= set(table)
    assert table["train_facts"] == 80 and table["test_facts"] == 20
    assert table["train_mrr"] > 0.5 and table["atomic_mrr"] > 0.5
    assert table["train_mrr"] > 5 * table["chance_mrr"]
    # The generated facts are written beside the run; probing that file gives the same table.
    facts = run / "facts.jsonl"
    assert len(facts.read_text().splitlines()) == 80 + 20 + 20
    again = probe_json(run, "--data", facts)
    assert again["test_mrr"] == table["test_mrr"] and again["train_mrr"] == table["train_mrr"]
    untrained = probe_json(run, "--random-init")
    assert untrained["train_mrr"] < table["train_mrr"] / 3


@pytest.mark.slow
def test_language_model_trains_on_a_users_jsonl_and_reports_token_mrr(tmp_path):
    facts = tmp_path / "facts.jsonl"
    rows = []
    for i in range(24):
        rows.append({"head": f"ann {i}", "relation": "likes", "tail": f"bob {i}", "split": "train"})
        rows.append(
            {
                "head": f"bob {i}",
                "relation": "liked_by",
                "tail": f"ann {i}",
                "split": "test" if i % 4 == 0 else "train",
            }
        )
    facts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "lm"
    result = invoke(
        "pretrain",
        "concepts/concept-lm-cpu",
        "--data",
        facts,
        "--out",
        run,
        "--max-steps",
        60,
        "--quiet",
        *TINY[3:],
        "model.depth=1",
    )
    assert result.exit_code == 0, result.output
    table = probe_json(run)
    assert table["ranked"] == "token" and table["data"] == str(facts)
    assert "atomic_mrr" not in table  # the file has no atomic facts
    assert table["test_facts"] == 6 and table["train_facts"] == 42
    assert table["train_mrr"] > 0.3


def test_bad_facts_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"head": "a", "relation": "r"}\n')
    result = invoke("pretrain", "concepts", "--data", bad, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 2
    assert "bad.jsonl:1: 'tail' must be a non-empty string" in result.output
