"""Checkpoints: safetensors without pickle, exact round trips, damage and full disks survived."""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from jepactl import checkpoint
from jepactl.checkpoint import (
    find_checkpoints,
    load_latest_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from jepactl.cli import app
from jepactl.errors import UserError
from jepactl.state_file import pack, unpack


def assert_identical(a, b, where="state"):
    """Equal values of the same types all the way down (tuples stay tuples, keys keep types)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


def nested_state():
    weight = torch.arange(12.0).reshape(3, 4)
    return {
        "model": {
            "weight": weight,
            "tied": weight,
            "row": weight[1],
            "transposed": weight.t(),
            "half": torch.ones(2, dtype=torch.bfloat16),
            "flag": torch.tensor(True),
            "empty": torch.zeros(0, 5),
            "scalar": torch.tensor(3.5, dtype=torch.float64),
        },
        "optimizer": {
            "state": {0: {"step": torch.tensor(7.0)}, 1: {}},
            "param_groups": [
                {
                    "params": [0, 1],
                    "betas": (0.9, 0.95),
                    "lr": 1e-3,
                    "fused": None,
                    "amsgrad": False,
                }
            ],
        },
        "arrays": [
            np.arange(5, dtype=np.uint32),
            np.eye(2)[None],
            np.float64(0.1),
            np.array(2.5, dtype=np.float32),
        ],
        "keys": {(1, "a"): "tuple key", 3: ("x", None, float("nan"))},
        "step": 123,
        "name": "run",
    }


def test_pack_unpack_restores_a_nested_state_exactly(tmp_path):
    state = nested_state()
    tensors, skeleton = pack(state)
    save_file(tensors, tmp_path / "plain.safetensors")  # shared and strided tensors were copied
    assert "optimizer/state/0/step" in tensors and "model/weight" in tensors
    assert_identical(unpack(tensors, skeleton), state)

    path = save_checkpoint(tmp_path / "checkpoints", 123, state)
    assert path.name == "step-00000123.safetensors"
    loaded, loaded_from = load_latest_checkpoint(tmp_path / "checkpoints")
    assert loaded_from == path
    assert_identical(loaded, state)
    assert b"\x80\x04" not in path.read_bytes()[:16]  # a safetensors header, not a pickle


def test_rng_states_round_trip_so_the_next_draws_repeat(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal(), random.gauss(0, 1)  # both cache a second gaussian
    save_checkpoint(tmp_path, 1, {"rng": [rng_state()]})
    expected = (torch.rand(4), np.random.standard_normal(3), random.gauss(0, 1), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    set_rng_state(load_latest_checkpoint(tmp_path)[0]["rng"][0])
    drawn = (torch.rand(4), np.random.standard_normal(3), random.gauss(0, 1), random.random())
    assert torch.equal(drawn[0], expected[0])
    assert np.array_equal(drawn[1], expected[1]) and drawn[2:] == expected[2:]


def test_keep_leaves_exactly_the_newest_checkpoints(tmp_path):
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert [p.name for p in find_checkpoints(tmp_path)] == [
        "step-00000005.safetensors",
        "step-00000004.safetensors",
    ]
    save_checkpoint(tmp_path, 6, {"step": 6}, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000006.safetensors"]


def test_a_truncated_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(100), "step": 1})
    newest = save_checkpoint(tmp_path, 2, {"w": torch.zeros(100), "step": 2})
    newest.write_bytes(newest.read_bytes()[:300])  # a disk that filled up, a copy cut short
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        state, path = load_latest_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "step-00000001.safetensors"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(newest) in warnings[0]
    assert "falling back to 'step-00000001.safetensors'" in warnings[0]

    path.write_bytes(b"garbage")
    with pytest.raises(UserError, match=f"no readable checkpoint in '{tmp_path}'"):
        load_latest_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no checkpoint in"):
        load_latest_checkpoint(tmp_path / "missing")


def test_temporary_files_of_an_interrupted_save_are_removed(tmp_path):
    save_checkpoint(tmp_path, 1, {"step": 1})
    leftover = tmp_path / ".step-00000002.safetensors.k3j2.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert load_latest_checkpoint(tmp_path)[0] == {"step": 1}  # not taken for a checkpoint
    save_checkpoint(tmp_path, 2, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000001.safetensors",
        "step-00000002.safetensors",
    ]


def test_a_state_of_another_shape_names_the_key_and_both_shapes(tmp_path):
    source = tmp_path / "step-00000001.safetensors"
    with pytest.raises(UserError) as err:
        load_model_state(nn.Linear(5, 3), nn.Linear(4, 3).state_dict(), source)
    message = str(err.value)
    assert f"'{source}'" in message and "'weight'" in message
    assert "(3, 4) in the checkpoint" in message and "(3, 5) in the model" in message
    with pytest.raises(UserError, match=r"the model has '1\.weight' \(2, 3\) but the checkpoint"):
        load_model_state(
            nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)),
            nn.Sequential(nn.Linear(4, 3)).state_dict(),
            source,
        )
    with pytest.raises(UserError, match=r"the checkpoint has '1\.weight' \(2, 3\) but the model"):
        load_model_state(
            nn.Sequential(nn.Linear(4, 3)),
            nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)).state_dict(),
            source,
        )


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    previous = save_checkpoint(tmp_path, 1, {"step": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    with pytest.raises(UserError) as err:
        save_checkpoint(tmp_path, 2, {"w": torch.zeros(10), "step": 2})
    assert str(err.value) == (
        f"disk full while writing '{tmp_path / 'step-00000002.safetensors'}'"
        f": the previous checkpoint '{previous}' is intact"
    )
    assert list(tmp_path.iterdir()) == [previous]


@pytest.mark.slow
def test_a_file_size_limit_mid_write_keeps_the_previous_checkpoint(tmp_path):
    """The kernel refuses the write itself (EFBIG), as on a disk that fills up mid-save."""
    script = textwrap.dedent("""
        import resource, signal, sys, torch
        from pathlib import Path
        from jepactl.checkpoint import save_checkpoint
        from jepactl.errors import UserError
        folder = Path(sys.argv[1])
        save_checkpoint(folder, 1, {"w": torch.ones(10), "step": 1})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        try:
            save_checkpoint(folder, 2, {"w": torch.zeros(100_000), "step": 2})
        except UserError as err:
            print(err)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    previous = tmp_path / "step-00000001.safetensors"
    assert out.stdout.strip() == (
        f"file size limit reached while writing "
        f"'{tmp_path / 'step-00000002.safetensors'}': the previous "
        f"checkpoint '{previous}' is intact"
    )
    assert list(tmp_path.iterdir()) == [previous]  # the temporary file is gone
    state, path = load_latest_checkpoint(tmp_path)
    assert path == previous and state["step"] == 1 and torch.equal(state["w"], torch.ones(10))


# --------------------------------------------------------------------------------------------
# old pickle checkpoints through the CLI
# --------------------------------------------------------------------------------------------

TINY_TABLE = [
    "model.embed_dim=16",
    "model.depth=1",
    "model.num_heads=2",
    "predictor.embed_dim=8",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "train.batch_size=16",
    "train.num_workers=0",
    "train.precision=fp32",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-step tabular run and its training table."""
    root = tmp_path_factory.mktemp("legacy")
    rng = np.random.default_rng(0)
    table = root / "table.csv"
    pd.DataFrame(
        {"a": rng.normal(size=64), "b": rng.normal(size=64), "y": rng.choice(["p", "q"], size=64)}
    ).to_csv(table, index=False)
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "tabular/tjepa-cpu",
            "--data",
            str(table),
            "--out",
            str(root / "run"),
            "--max-steps",
            "2",
            "--quiet",
            "data.target=y",
            *TINY_TABLE,
        ],
    )
    assert result.exit_code == 0, result.output
    return root / "run", table


class Evil:
    """Unpickling this runs a shell command: what a hostile last.pt can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def legacy_copy(trained, tmp_path, state) -> Path:
    """Copy the run with its checkpoints replaced by one old-format ``last.pt`` of ``state``."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    torch.save(state, run / "checkpoints" / "last.pt")
    return run


@pytest.fixture(autouse=True)
def pickle_switch_off(monkeypatch):
    """--unsafe-pickle sets a process-wide switch; CliRunner runs in this process."""
    monkeypatch.setattr(checkpoint, "_UNSAFE_PICKLE", False)


@pytest.mark.parametrize("command", ["export", "probe", "embed", "finetune", "pretrain"])
def test_an_old_pickle_checkpoint_is_refused_without_running_it(trained, tmp_path, command):
    marker = tmp_path / "MARKER"
    run = legacy_copy(trained[0], tmp_path, Evil(marker))
    table = str(trained[1])
    args = {
        "export": ["export", str(run), "--out", str(tmp_path / "export")],
        "probe": ["probe", str(run), "--data", table],
        "embed": ["embed", str(run), "--data", table, "--out", str(tmp_path / "e.npy")],
        "finetune": ["finetune", str(run), "--out", str(tmp_path / "ft"), "--quiet"],
        "pretrain": ["pretrain", str(run), "--resume", "--max-steps", "4", "--quiet"],
    }
    result = CliRunner().invoke(app, args[command])
    assert result.exit_code == 2, result.output
    assert (
        f"checkpoint '{run / 'checkpoints' / 'last.pt'}' is in the old pickle format"
        in result.output
    )
    assert "jepactl --unsafe-pickle" in result.output
    assert not marker.exists()


def test_unsafe_pickle_loads_a_trusted_old_checkpoint(trained, tmp_path, caplog):
    state, _ = load_latest_checkpoint(trained[0] / "checkpoints")
    run = legacy_copy(trained[0], tmp_path, state)
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        result = CliRunner().invoke(
            app, ["--unsafe-pickle", "export", str(run), "--out", str(tmp_path / "export")]
        )
    assert result.exit_code == 0, result.output
    assert any("unpickling the old-format checkpoint" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "export" / "model.safetensors").is_file()


def test_resuming_with_a_changed_model_names_the_key(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    result = CliRunner().invoke(
        app, ["pretrain", str(run), "--resume", "--max-steps", "4", "--quiet", "model.depth=2"]
    )
    assert result.exit_code == 2, result.output
    assert (
        "does not match the recipe's model: the model has 'context_encoder.blocks.1."
        in result.output
    )
    assert "Traceback" not in result.output
