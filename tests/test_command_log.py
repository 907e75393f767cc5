"""Each command's stderr is kept in RUN/logs/<command>-<time>.log, plain and complete."""

from __future__ import annotations

import logging
import sys

from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.cli import app
from jepactl.command_log import command_log, plain


def logs(run, command):
    return sorted((run / "logs").glob(f"{command}-*.log"))


def test_pretrain_and_probe_keep_their_stderr_in_the_run(tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "image/ijepa-cpu", *TINY_IMAGE_OVERRIDES, "train.log_every=1"]
    done = CliRunner().invoke(app, [*args, "--out", str(run), "--max-steps", "2"])
    assert done.exit_code == 0, done.output
    (log,) = logs(run, "pretrain")
    text = log.read_text()
    assert "[pretrain] step 1/2" in text and "[pretrain] step 2/2" in text
    assert "\x1b[" not in text  # no terminal codes
    probed = CliRunner().invoke(app, ["probe", str(run), "--data", "/nope"])
    assert probed.exit_code == 2
    (log,) = logs(run, "probe")
    assert "error: " in log.read_text() and "/nope" in log.read_text()


def test_the_tee_drops_repaints_strips_colour_and_catches_logging(tmp_path, capsys):
    logging.basicConfig(stream=sys.stderr, force=True, format="%(levelname)s: %(message)s")
    with command_log(tmp_path, "probe") as path:
        sys.stderr.write("\x1b[33mwarning:\x1b[0m kept\n")
        sys.stderr.write("\r\x1b[2K\x1b[1A bar 50%\n")  # a live display's repaint
        logging.getLogger("jepactl").warning("from logging")
        plain("[pretrain] step 3/9  loss 0.1")
    text = path.read_text()
    assert text == "warning: kept\nWARNING: from logging\n[pretrain] step 3/9  loss 0.1\n"
    assert "bar 50%" in capsys.readouterr().err  # the terminal still shows everything
    logging.basicConfig(force=True)


def test_no_log_without_a_run_folder_or_off_rank_0(tmp_path, monkeypatch):
    with command_log(None, "embed") as path:
        assert path is None
    monkeypatch.setenv("RANK", "1")
    with command_log(tmp_path, "embed") as path:
        assert path is None and not (tmp_path / "logs").exists()


def test_long_loops_report_progress_in_plain_lines_off_a_terminal(capsys):
    from jepactl.progress import TaskProgress

    with TaskProgress("features train", 20) as progress:
        for _ in range(20):
            progress.advance()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[0].startswith("[features train] 2/20")
    assert lines[-1].startswith("[features train] 20/20")
    with TaskProgress("probe seeds", 1, min_total=2) as progress:
        progress.advance()  # one seed: nothing to report
    assert capsys.readouterr().err == ""
