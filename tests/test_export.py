"""Export: clean safetensors + config.json, load_encoder rebuilds the same features."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import jepactl
from conftest import TINY_IMAGE_OVERRIDES
from jepactl.export import clean_state_dict, run_export
from jepactl.recipe import load_recipe
from jepactl.runs import load_trained_method
from jepactl.train import pretrain


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "r"
    pretrain(
        load_recipe("image/ijepa-cpu", [*TINY_IMAGE_OVERRIDES, "train.max_steps=3"]),
        run,
        quiet=True,
    )
    return run


def test_exported_features_equal_the_runs_features(trained_run, tmp_path):
    run_export(trained_run, tmp_path / "exp")
    _, method, _ = load_trained_method(trained_run)
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = method.encoder("target").pooled(images)
        got = jepactl.load_encoder(tmp_path / "exp").pooled(images)
    assert torch.equal(expected, got)
    keys = load_file(str(tmp_path / "exp" / "model.safetensors")).keys()
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in keys)
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert config["kind"] == "encoder" and config["tokenizer"]["kind"] == "patch2d"


@pytest.mark.slow
@pytest.mark.parametrize("registers", [0, 2])
def test_a_timm_export_loads_strictly_into_timm_and_pools_the_same(tmp_path, registers):
    import timm

    run = tmp_path / "r"
    overrides = [*TINY_IMAGE_OVERRIDES, "train.max_steps=1", f"model.num_registers={registers}"]
    pretrain(load_recipe("image/ijepa-cpu", overrides), run, quiet=True)
    run_export(run, tmp_path / "timm", fmt="timm")
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    model = timm.create_model(
        config["architecture"],
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "timm" / "model.safetensors")},
        **config["model_args"],
    ).eval()
    weights = load_file(str(tmp_path / "timm" / "model.safetensors"))
    assert set(weights) == set(model.state_dict())  # strict: nothing missing or left over
    _, method, _ = load_trained_method(run)
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = method.encoder("target").pooled(images)
        got = model(images)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


def test_timm_export_refuses_what_timm_cannot_rebuild(tmp_path):
    from jepactl.errors import UserError

    run = tmp_path / "r"
    pretrain(
        load_recipe("image/ijepa-cpu", [*TINY_IMAGE_OVERRIDES, "train.max_steps=1"]),
        run,
        quiet=True,
    )
    with pytest.raises(UserError, match="encoders only"):
        run_export(run, tmp_path / "p", which="predictor", fmt="timm")
    assert not (tmp_path / "p" / "model.safetensors").exists()


@pytest.mark.slow
def test_load_encoder_in_a_fresh_process_gives_the_same_features(trained_run, tmp_path):
    run_export(trained_run, tmp_path / "exp")
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    torch.save(images, tmp_path / "x.pt")
    with torch.no_grad():
        expected = jepactl.load_encoder(tmp_path / "exp").pooled(images)
    code = (
        "import torch, jepactl; torch.set_grad_enabled(False); x = torch.load(r'%s'); "
        "e = jepactl.load_encoder(r'%s'); torch.save(e.pooled(x), r'%s')"
        % (tmp_path / "x.pt", tmp_path / "exp", tmp_path / "y.pt")
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_context_and_predictor_exports_reload(trained_run, tmp_path):
    _, method, _ = load_trained_method(trained_run)
    run_export(trained_run, tmp_path / "ctx", which="context")
    run_export(trained_run, tmp_path / "pred", which="predictor")
    ctx = jepactl.load_encoder(tmp_path / "ctx")
    pred = jepactl.load_encoder(tmp_path / "pred")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(ctx(x), method.context_encoder(x))
        keep = torch.arange(10).repeat(2, 1)
        target = torch.arange(10, 14).reshape(1, 1, 4).repeat(2, 1, 1)
        z = method.context_encoder(x, keep)
        assert torch.equal(pred(z, keep, None, target), method.predictor(z, keep, None, target))


def test_onnx_export_matches_torch(trained_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run_export(trained_run, tmp_path / "onnx", fmt="onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    x = torch.randn(3, 3, 16, 16)
    tokens, pooled = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = jepactl.load_encoder(tmp_path / "onnx").pooled(x)
    assert pooled.shape == (3, 32)
    assert abs(pooled - expected.numpy()).max() < 1e-4


def test_clean_state_dict_strips_wrapper_prefixes():
    state = {"module._orig_mod.blocks.0.w": torch.ones(1), "norm.bias": torch.zeros(1)}
    assert set(clean_state_dict(state)) == {"blocks.0.w", "norm.bias"}


def test_embed_writes_parquet_with_single_and_multi_label_columns(
    trained_run, tmp_path, monkeypatch
):
    import pyarrow.parquet as pq

    from jepactl.evaluate import embed as embed_module

    out = tmp_path / "e.parquet"
    report = embed_module.run_embed(trained_run, "builtin:shapes", out, split="test")
    table = pq.read_table(out)
    assert report["samples"] == 500 and table.num_rows == 500
    assert table.schema.field("embedding").type.list_size == 32
    assert table.column_names == ["index", "id", "label", "class", "embedding"]
    rows = table.slice(0, 3).to_pylist()
    assert [r["id"] for r in rows] == ["0", "1", "2"]  # built-in set: no files, the index
    assert all(r["class"] != "" for r in rows)  # the label's name (the shapes' classes)

    multi = torch.tensor([[1, 0, 1]] * 500)
    monkeypatch.setattr(
        embed_module, "iter_features", lambda *a, **k: iter([(torch.zeros(500, 32), multi)])
    )
    embed_module.run_embed(trained_run, "builtin:shapes", tmp_path / "m.parquet", split="test")
    labels = pq.read_table(tmp_path / "m.parquet").column("label").to_pylist()
    assert labels[0] == [1, 0, 1]


def test_onnx_missing_names_the_extra_and_leaves_no_folder(trained_run, tmp_path, monkeypatch):
    from jepactl.errors import UserError

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(UserError, match=r"jepactl\[onnx\]"):
        run_export(trained_run, tmp_path / "onnx", fmt="onnx")
    assert not (tmp_path / "onnx").exists()


def test_the_export_has_a_model_card_timm_rebuild_info_and_strict_loading(trained_run, tmp_path):
    from safetensors.torch import save_file

    from jepactl.errors import UserError

    result = run_export(trained_run, tmp_path / "exp")
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "step 3 of 3" in card and "image/ijepa-cpu" in card and "licence" in card
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert config["timm"]["model_args"]["embed_dim"] == 32 and result["max_steps"] == 3
    weights = load_file(str(tmp_path / "exp" / "model.safetensors"))
    weights["extra.weight"] = weights.pop("norm.weight")
    save_file(weights, str(tmp_path / "exp" / "model.safetensors"))
    with pytest.raises(UserError, match="missing norm.weight; unexpected extra.weight"):
        jepactl.load_encoder(tmp_path / "exp")


@pytest.mark.slow
def test_exporting_an_unfinished_run_warns_with_its_step(tmp_path):
    from typer.testing import CliRunner

    from jepactl.cli import app

    run = tmp_path / "r"
    recipe = load_recipe("image/ijepa-cpu", [*TINY_IMAGE_OVERRIDES, "train.max_steps=5"])
    pretrain(recipe, run, quiet=True, stop_after=2)
    done = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "e"), "--json"])
    assert done.exit_code == 0, done.output
    assert (
        "exporting step 2 of 5" in done.stderr and json.loads(done.stdout)["results"]["step"] == 2
    )
    assert "the run had not finished" in (tmp_path / "e" / "README.md").read_text()
