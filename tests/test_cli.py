"""The command line: one clear line and exit 2 for every user error, results on stdout."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--data", "/does/not/exist"], ["'/does/not/exist'", "does not exist"]),
        (["train.batchsize=3"], ["train.batchsize", "train.batch_size"]),
        (["train.batch_size=abc"], ["train.batch_size", "integer"]),
        (["--max-steps", "-3"], ["--max-steps", "-3"]),
    ],
)
def test_bad_pretrain_input_is_one_line_and_exit_2(tmp_path, args, fragments):
    result = run("pretrain", "image/ijepa-cpu", "--out", str(tmp_path / "r"), *args)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_empty_folder_and_folder_of_text_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(run("pretrain", "image/ijepa-cpu", "--data", str(empty)), "is empty")
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("hello")
    (texts / "b.png").write_text("not a png")
    assert_user_error(
        run("pretrain", "image/ijepa-cpu", "--data", str(texts)),
        "no readable images",
        "2 files skipped",
    )


def test_unknown_recipe_suggests_the_closest():
    assert_user_error(run("pretrain", "image/tinyy"), "image/tinyy", "image/ijepa-cpu")


def test_probe_of_a_missing_run():
    assert_user_error(run("probe", "/no/such/run"), "does not exist")


def test_version_and_recipes_list_json():
    assert run("--version").stdout.startswith("jepactl ")
    names = [r["name"] for r in json.loads(run("recipes", "list", "--json").stdout)]
    assert "image/ijepa" in names and "image/ijepa-cpu" in names and "image/tiny" not in names


def test_every_command_help_has_an_example():
    for command in ("pretrain", "probe", "finetune", "embed", "export"):
        assert "Example" in run(command, "--help").stdout, command
    assert "Example" in run("recipes", "show", "--help").stdout


def test_flags_show_as_flags_in_help():
    """typer shows a bool option as ``--quiet <bool>``, as if ``--quiet true`` were valid."""
    commands = [[], ["pretrain"], ["probe"], ["finetune"], ["embed"], ["export"], ["bench"]]
    commands += [["report"], ["recipes", "list"]]
    for command in commands:
        text = run(*command, "--help").stdout
        assert "<bool>" not in text and "BOOLEAN" not in text, command
    assert "--quiet" in run("pretrain", "--help").stdout


@pytest.mark.slow
def test_pretrain_then_probe_json_on_stdout(tmp_path):
    out = tmp_path / "r"
    result = run(
        "pretrain",
        "image/ijepa-cpu",
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--json",
        "--quiet",
        *TINY_IMAGE_OVERRIDES,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"]["step"] == 2
    result = run("probe", str(out), "--json", "probe.batch_size=64")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["results"]
    assert report["train_samples"] == 2000 and report["test_samples"] == 500
    assert 0.0 <= report["linear_accuracy"] <= 1.0


def test_only_rank_0_prints_a_result(monkeypatch, capsys):
    from jepactl.cli_output import emit

    monkeypatch.setenv("RANK", "1")
    emit("probe", {"acc": 1.0}, True, {})
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    emit("probe", {"acc": 1.0}, True, {})
    assert json.loads(capsys.readouterr().out)["results"] == {"acc": 1.0}
