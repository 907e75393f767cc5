"""ECG-JEPA model, loss, recipes and the command line on the embedded sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jepactl.data.sampling import BatchPlan
from jepactl.domains.ecg import method as ecg_jepa
from jepactl.domains.ecg.encoder import encoder_for_length
from jepactl.errors import DataError
from jepactl.nn.vit import TransformerEncoder, gather_tokens
from jepactl.recipe import load_recipe

TINY = [
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "predictor.embed_dim=16",
    "predictor.depth=1",
    "predictor.num_heads=2",
    "train.batch_size=4",
    "train.num_workers=0",
]


def tiny_recipe(name: str = "ecg/ecg-jepa-cpu", *extra: str):
    return load_recipe(name, TINY + list(extra))


def test_paper_recipe_is_vit_xs_without_bias_and_one_register():
    recipe = load_recipe("ecg")
    assert recipe.method == "ecg-jepa" and recipe.model.embed_dim == 192
    assert (recipe.model.depth, recipe.model.num_heads, recipe.model.patch_size) == (8, 4, 25)
    assert (recipe.ema.start, recipe.ema.end, recipe.loss.kind) == (0.998, 0.9995, "l1")
    method = ecg_jepa.build(recipe)
    encoder = method.encoder("target")
    params = sum(p.numel() for p in encoder.parameters())
    assert 3.4e6 < params < 3.8e6  # the paper's ViT-XS: 3.6M
    assert not [n for n, _ in method.named_parameters() if n.endswith(".bias")]
    assert encoder.registers.shape == (1, 1, 192) and encoder.num_tokens == 200
    small = load_recipe("ecg/ecg-jepa-s")
    vit_s = TransformerEncoder(ecg_jepa.tokenizer_config(small), small.model)
    assert 14.0e6 < sum(p.numel() for p in vit_s.parameters()) < 14.6e6  # ViT-S: 14.3M


def test_forward_is_mean_l1_between_predicted_and_target_tokens_of_masked_patches():
    recipe = tiny_recipe()
    torch.manual_seed(0)
    method = ecg_jepa.build(recipe)
    dataset, collate, source = ecg_jepa.pretrain_data(recipe, None)
    assert not source.skipped and len(source.records) == 6  # DS1 part of the embedded sample
    keys = next(iter(BatchPlan(len(dataset), 4, seed=0)))
    batch = collate([dataset[k] for k in keys])
    assert batch["signals"].shape == (4, 2, 640)
    out = method(batch)
    with torch.no_grad():
        target = gather_tokens(method.target_encoder(batch["signals"]), batch["targets"])
        context = method.context_encoder(batch["signals"], batch["context"])
        predicted = method.predictor(context, batch["context"], None, batch["targets"])
    assert torch.allclose(out["loss"], (predicted - target).abs().mean(), atol=1e-5)
    out["loss"].backward()
    assert method.context_encoder.tokenizer.proj.weight.grad is not None
    assert all(p.grad is None for p in method.target_encoder.parameters())


def test_same_crop_and_mask_for_the_same_sample_key():
    recipe = tiny_recipe()
    dataset, collate, _ = ecg_jepa.pretrain_data(recipe, None)
    key = (3, 1234, 99)
    assert torch.equal(dataset[key]["signals"], dataset[key]["signals"])
    a = collate([dataset[key], dataset[(4, 5, 99)]])
    b = collate([dataset[key], dataset[(4, 5, 99)]])
    assert torch.equal(a["context"], b["context"]) and torch.equal(a["signals"], b["signals"])


def test_an_encoder_for_shorter_crops_shares_the_weights():
    torch.manual_seed(0)
    method = ecg_jepa.build(tiny_recipe())
    encoder = method.encoder("target").eval()
    short = encoder_for_length(encoder, 320).eval()
    x = torch.randn(2, 2, 320)
    assert short.num_tokens == 32
    full_input = torch.cat([x, torch.zeros(2, 2, 320)], dim=2)
    # Same conv weights: the first 32 patch embeddings of a longer input are identical.
    assert torch.allclose(short.tokenizer(x), encoder.tokenizer(full_input)[:, :32])


def test_pretraining_only_on_train_split_records_keeps_test_records_out():
    dataset, _, source = ecg_jepa.pretrain_data(tiny_recipe(), None)
    names = {Path(r.name).name for r in source.records}
    assert names == {"118", "119", "124", "208", "209", "223"}
    _, _, everything = ecg_jepa.pretrain_data(
        tiny_recipe("ecg/ecg-jepa-cpu", "data.pretrain_split=all"), None
    )
    assert len(everything.records) == 10


def test_a_recipe_whose_leads_no_record_has_is_a_data_error():
    with pytest.raises(DataError, match="data.leads"):
        ecg_jepa.pretrain_data(tiny_recipe("ecg/ecg-jepa-cpu", "data.leads=[V7]"), None)


def _cli(*args: str, cwd: Path):
    """Run the CLI in-process (a subprocess would spend most of the test importing torch)."""
    from typer.testing import CliRunner

    from jepactl.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_cli_pretrains_on_the_embedded_sample_then_probes_beats(tmp_path):
    run = tmp_path / "run"
    done = _cli(
        "pretrain",
        "ecg/ecg-jepa-cpu",
        "--out",
        str(run),
        "--max-steps",
        "2",
        "--json",
        *TINY,
        cwd=tmp_path,
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout[done.stdout.index("{") :])["results"]["step"] == 2
    probe = _cli(
        "probe",
        str(run),
        "--json",
        "--head",
        "linear,attentive",
        "probe.max_train_per_class=20",
        "probe.max_test_per_class=20",
        "probe.attentive_steps=5",
        "probe.num_workers=0",
        cwd=tmp_path,
    )
    assert probe.exit_code == 0, probe.output
    report = json.loads(probe.stdout[probe.stdout.index("{") :])["results"]
    assert report["task"] == "AAMI beat classes"
    assert report["test_beats"].startswith("N=1188 S=221 V=290 F=98")  # embedded DS2 part
    for head in ("linear", "attentive"):
        assert 0.0 <= report[f"{head}_balanced_accuracy"] <= 1.0
        assert f"{head}_ppv_S" in report and f"{head}_macro_f1" in report


def test_cli_bad_data_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _cli(
        "pretrain",
        "ecg/ecg-jepa-cpu",
        "--data",
        str(tmp_path / "empty"),
        "--out",
        str(tmp_path / "r"),
        *TINY,
        cwd=tmp_path,
    )
    assert done.exit_code == 2
    assert "no ECG records under" in done.output and "Traceback" not in done.output
