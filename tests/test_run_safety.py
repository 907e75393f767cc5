"""Run safety: one process per run folder; an output that cannot be written (a file in the way,
a read-only disk, a full disk) is one clear line and exit 2 before the work starts, never a
traceback, and never a damaged previous export or embedding."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl import cli, cli_errors
from jepactl.checkpoint import _FILE_MODE
from jepactl.errors import UserError
from jepactl.evaluate.embed import run_embed
from jepactl.export import run_export
from jepactl.recipe import load_recipe
from jepactl.run_lock import RunLock

runner = CliRunner()
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def jepactl(*args, preexec_fn=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jepactl", *map(str, args)],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        preexec_fn=preexec_fn,
        timeout=timeout,
    )


PROGRESS_LINE = re.compile(r"^\[[\w ]+\] \d+/\d+")  # "[embed] 12/125  0s": progress, not an error


def assert_one_line_error(stderr: str, *fragments: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def assert_user_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return assert_one_line_error(result.stderr, *fragments)


def finished_pid() -> int:
    """Return the pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def write_lock(run_dir: Path, **holder) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    path.write_text(
        json.dumps(
            {
                "host": socket.gethostname(),
                "started": "2026-01-01T00:00:00",
                "argv": ["jepactl", "pretrain"],
                **holder,
            }
        )
    )
    return path


def limit_file_size(limit: int):
    """preexec_fn: files beyond ``limit`` bytes fail with EFBIG, as on a full disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from jepactl.train import pretrain

    run_dir = tmp_path_factory.mktemp("safety") / "run"
    # Small embedding batches: a file-size limit also caps the DataLoader's shared-memory files.
    overrides = [*TINY_IMAGE_OVERRIDES, "train.max_steps=2", "probe.batch_size=16"]
    pretrain(load_recipe("image/ijepa-cpu", overrides), run_dir, quiet=True)
    return run_dir


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


def _can_write(folder: Path) -> bool:
    try:
        probe = folder / f".probe-{os.getpid()}"
        probe.write_text("x")
        probe.unlink()
        return True
    except OSError:
        return False


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder this process cannot write to: chmod stops everyone but root, so also try
    JEPACTL_TEST_READONLY_DIR (e.g. a read-only mount) and /sys, which refuses even root."""
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    candidates = [locked, os.environ.get("JEPACTL_TEST_READONLY_DIR"), "/sys"]
    for candidate in filter(None, candidates):
        if Path(candidate).is_dir() and not _can_write(Path(candidate)):
            yield Path(candidate)
            break
    else:
        locked.chmod(0o755)
        pytest.skip("no read-only folder here (set JEPACTL_TEST_READONLY_DIR)")
    locked.chmod(0o755)


# ------------------------------------------------------------------------------- the run lock


def test_the_lock_names_its_holder_and_goes_on_exit(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir, argv=["jepactl", "pretrain", "x"]):
        holder = json.loads((run_dir / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["argv"] == ["jepactl", "pretrain", "x"] and holder["started"]
        (run_dir / "metrics.jsonl").write_text("")
    assert not (run_dir / ".lock").exists()
    assert (run_dir / "metrics.jsonl").exists()


def test_the_lock_goes_on_an_exception_and_an_empty_new_folder_with_it(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunLock(run_dir):
            assert (run_dir / ".lock").exists()
            raise RuntimeError("the run failed before writing anything")
    assert not run_dir.exists()


def test_a_live_holder_is_refused_with_its_pid(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):
        with pytest.raises(UserError) as info:
            RunLock(run_dir).acquire()
    message = str(info.value)
    assert f"run folder '{run_dir}' is in use by pid {os.getpid()} on host" in message
    assert "wait for it or choose another --out" in message and "\n" not in message


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    run_dir = tmp_path / "run"
    dead = finished_pid()
    write_lock(run_dir, pid=dead)
    with RunLock(run_dir):
        assert json.loads((run_dir / ".lock").read_text())["pid"] == os.getpid()
    assert not (run_dir / ".lock").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"pid {dead}" in warnings[0] and "stale" in warnings[0]


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    run_dir = tmp_path / "run"
    lock = write_lock(run_dir, pid=finished_pid(), host="gpu-node-17")
    with pytest.raises(UserError) as info:
        RunLock(run_dir).acquire()
    message = str(info.value)
    assert "gpu-node-17" in message and "cannot be checked" in message
    assert f"rm {lock}" in message
    assert lock.exists()


def test_an_unreadable_lock_is_refused_not_overwritten(tmp_path):
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    lock.write_text("garbage")
    with pytest.raises(UserError, match="cannot read"):
        RunLock(lock.parent).acquire()
    assert lock.read_text() == "garbage"


def test_release_leaves_a_lock_that_is_not_its_own(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):  # the user removed our lock and started another run
        write_lock(run_dir, pid=12345)
    assert json.loads((run_dir / ".lock").read_text())["pid"] == 12345


def test_pretrain_into_a_folder_held_by_another_process_exits_2(tmp_path):
    """Another process holds the folder: `jepactl pretrain` names it and exits 2 (the linear
    analysis takes the lock in the CLI; the trainer takes it in train.pretrain)."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from jepactl.run_lock import RunLock\n"
            f"with RunLock({str(run_dir)!r}):\n print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=SUBPROCESS_ENV,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run("pretrain", "linear", "--out", run_dir, "--quiet")
        assert_user_error(result, f"'{run_dir}' is in use by pid {holder.pid}")
    finally:
        holder.terminate()
        holder.wait(timeout=30)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_pretrain_processes_into_one_run_folder(tmp_path):
    """Needs train.pretrain to hold RunLock on the main process."""
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "jepactl",
        "pretrain",
        "image/ijepa-cpu",
        "--out",
        str(out),
        "--quiet",
        *TINY_IMAGE_OVERRIDES,
    ]
    first = subprocess.Popen(
        [*command, "--max-steps", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=SUBPROCESS_ENV,
    )
    try:
        # A step is logged (log_every=1): the loop runs, so SIGTERM will be caught and saved.
        _wait_for(
            lambda: (
                (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().strip()
            ),
            first,
        )
        assert (out / ".lock").exists(), "train.pretrain does not hold the run lock"
        first.send_signal(signal.SIGSTOP)  # alive but paused: the second gets the CPU to itself
        second = subprocess.run(
            [*command, "--max-steps", "2"],
            capture_output=True,
            text=True,
            env=SUBPROCESS_ENV,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert_one_line_error(
            second.stderr, f"is in use by pid {first.pid} on host", "choose another --out"
        )
    finally:
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGTERM)
        _, first_stderr = first.communicate(timeout=120)
    assert first.returncode == 0, first_stderr
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_pretrain_takes_over_a_stale_lock(tmp_path):
    """Needs train.pretrain to hold RunLock on the main process."""
    out = tmp_path / "run"
    dead = finished_pid()
    write_lock(out, pid=dead)
    result = jepactl(
        "pretrain",
        "image/ijepa-cpu",
        "--out",
        out,
        "--max-steps",
        "1",
        "--quiet",
        "--json",
        *TINY_IMAGE_OVERRIDES,
    )
    assert result.returncode == 0, result.stderr
    assert f"pid {dead}" in result.stderr and "stale" in result.stderr
    assert not (out / ".lock").exists()
    assert json.loads(result.stdout)["results"]["step"] == 1


# ------------------------------------------------------------------------------- OS errors


def test_an_os_error_is_one_line_naming_the_path_and_exit_2(capsys, monkeypatch):
    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/metrics.jsonl")

    with pytest.raises(typer.Exit) as info:
        cli_errors.guard(disk_full)
    assert info.value.exit_code == 2
    assert_one_line_error(capsys.readouterr().err, "disk full while writing 'runs/x/metrics.jsonl'")

    def read_only():
        raise OSError(errno.EROFS, "Read-only file system", "x/y")

    with pytest.raises(typer.Exit):
        cli_errors.guard(read_only)
    assert_one_line_error(capsys.readouterr().err, "cannot write 'x/y': Read-only file system")

    monkeypatch.setitem(cli_errors.STATE, "debug", True)  # --debug: the traceback
    with pytest.raises(OSError):
        cli_errors.guard(read_only)


@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_pretrain_out_that_cannot_be_a_folder(a_file, where):
    out = a_file if where == "is a file" else a_file / "run"
    result = run("pretrain", "image/ijepa-cpu", "--out", out, "--max-steps", "1")
    line = assert_user_error(result, f"'{out}'", "--out")
    assert f"'{a_file}' is a file, not a folder" in line


def test_pretrain_out_in_a_read_only_folder(read_only_dir):
    out = read_only_dir / "jepactl-test-run"
    assert_user_error(run("pretrain", "image/ijepa-cpu", "--out", out), f"cannot write '{out}'")
    assert not out.exists()


def test_pretrain_out_on_a_read_only_disk(tmp_path, monkeypatch):
    """What a read-only mount reports (root ignores chmod, so the error is simulated)."""

    def read_only_disk(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr("jepactl.output_paths.tempfile.mkstemp", read_only_disk)
    out = tmp_path / "run"
    assert_user_error(
        run("pretrain", "image/ijepa-cpu", "--out", out),
        f"cannot write '{out}': Read-only file system",
    )


def test_embed_checks_out_before_computing_anything(trained_run, a_file, tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("embeddings computed before --out was checked")

    monkeypatch.setattr("jepactl.evaluate.embed.iter_features", must_not_run)
    args = ["embed", trained_run, "--data", "builtin:shapes", "--out"]
    assert_user_error(
        run(*args, a_file / "emb.npy"),
        f"'{a_file / 'emb.npy'}'",
        f"'{a_file}' is a file, not a folder",
    )
    folder = tmp_path / "emb.npy"
    folder.mkdir()
    assert_user_error(run(*args, folder), f"--out '{folder}' is a folder")


def test_export_and_finetune_out_under_a_file(trained_run, a_file):
    assert_user_error(
        run("export", trained_run, "--out", a_file), f"--out '{a_file}'", "is a file, not a folder"
    )
    out = a_file / "finetuned"
    assert_user_error(
        run("finetune", trained_run, "--out", out, "--quiet"),
        f"'{out}'",
        f"'{a_file}' is a file, not a folder",
    )


# ------------------------------------------------------------------------------- exports


def test_export_files_share_one_mode_and_no_temporary_is_left(trained_run, tmp_path):
    out = tmp_path / "exp"
    run_export(trained_run, out)
    files = ["README.md", "config.json", "model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == files
    modes = {name: (out / name).stat().st_mode & 0o777 for name in files}
    assert modes == dict.fromkeys(files, _FILE_MODE)


@pytest.mark.slow
def test_a_full_disk_during_export_keeps_the_previous_export(trained_run, tmp_path):
    out = tmp_path / "exp"
    run_export(trained_run, out)  # the previous export: the target encoder
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before["model.safetensors"]) > 60_000
    result = jepactl(
        "export",
        trained_run,
        "--out",
        out,
        "--which",
        "context",
        preexec_fn=limit_file_size(50_000),
    )
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, f"'{out / 'model.safetensors'}'", "File too large")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_a_full_disk_during_embed_keeps_the_previous_file(trained_run, tmp_path):
    out = tmp_path / "emb.npy"
    run_embed(trained_run, "builtin:shapes", out)
    array = np.load(out)
    assert array.dtype == np.float32 and array.shape[0] == 2000
    before = out.read_bytes()
    result = jepactl(
        "embed",
        trained_run,
        "--data",
        "builtin:shapes",
        "--out",
        out,
        "--which",
        "context",
        preexec_fn=limit_file_size(100_000),
    )
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, f"'{out}'", "File too large")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.index.csv", "emb.npy"]
