"""The typed method contract: every registered method resolves to a MethodSpec that fills it."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_IMAGE_OVERRIDES
from jepactl.cli import app
from jepactl.errors import RecipeError, UserError
from jepactl.methods.base import MethodSpec, PretrainData
from jepactl.recipe import list_recipes, load_recipe
from jepactl.registry import METHODS, method_spec, recipe_class

# A small recipe per method (tiny overrides as in each method's own tests).
TINY = {
    "ijepa": ("image/ijepa-cpu", TINY_IMAGE_OVERRIDES),
    "dmt-jepa": ("image/dmt-jepa-cpu", TINY_IMAGE_OVERRIDES),
    "ecg-jepa": (
        "ecg/ecg-jepa-cpu",
        [
            "model.embed_dim=32",
            "model.depth=1",
            "model.num_heads=2",
            "predictor.embed_dim=16",
            "predictor.depth=1",
            "predictor.num_heads=2",
            "train.batch_size=4",
            "train.num_workers=0",
        ],
    ),
    "tjepa": (
        "tabular/tjepa-cpu",
        [
            "model.embed_dim=16",
            "model.depth=1",
            "model.num_heads=2",
            "predictor.embed_dim=8",
            "predictor.depth=1",
            "predictor.num_heads=2",
            "train.batch_size=8",
            "train.num_workers=0",
        ],
    ),
    "sar-jepa": (
        "sar/sar-jepa-cpu",
        [
            "data.crop_size=24",
            "data.image_size=16",
            "model.patch_size=4",
            "model.embed_dim=32",
            "model.depth=1",
            "model.num_heads=2",
            "predictor.embed_dim=16",
            "predictor.depth=1",
            "predictor.num_heads=2",
            "mask.window_size=2",
            "mask.mask_ratio=0.5",
            "target.gradient_scales=[1,2]",
            "train.batch_size=4",
            "train.num_workers=0",
        ],
    ),
    "concept-jepa": (
        "concepts",
        [
            "data.group_a=40",
            "data.group_b=20",
            "data.relation_pairs=2",
            "model.embed_dim=32",
            "model.num_heads=2",
            "model.predictor_depth=1",
        ],
    ),
    "concept-lm": (
        "concepts/concept-lm-cpu",
        [
            "data.group_a=40",
            "data.group_b=20",
            "data.relation_pairs=2",
            "model.embed_dim=32",
            "model.num_heads=2",
            "model.depth=1",
        ],
    ),
    "linear-jepa-mae": ("linear", []),
    "act-jepa": (
        "policy/act-jepa-state-cpu",
        [
            "model.dim=16",
            "model.heads=2",
            "model.encoder_layers=1",
            "model.decoder_layers=1",
            "model.feedforward=32",
            "data.chunk=4",
            "train.batch_size=4",
            "train.num_workers=0",
        ],
    ),
    "ad-l-jepa": (
        "lidar/ad-l-jepa-objects-cpu",
        ["model.channels=[8,16]", "model.strides=[1,2]", "model.blocks=1", "data.grid.cell=0.25"],
    ),
    "occupancy-mae": (
        "lidar/occupancy-mae-objects-cpu",
        ["model.channels=[8,16]", "model.strides=[1,2]", "model.blocks=1", "data.grid.cell=0.25"],
    ),
    "seq-jepa": (
        "views/seq-jepa-cpu",
        [
            "data.image_size=16",
            "model.encoder=vit",
            "model.vit.embed_dim=32",
            "model.vit.depth=1",
            "model.vit.num_heads=2",
            "model.vit.patch_size=4",
            "model.aggregator_depth=1",
            "model.aggregator_heads=2",
            "train.batch_size=4",
            "train.num_workers=0",
        ],
    ),
}
# Tokenizers whose inputs have a fixed shape a recipe names: `jepactl bench` can make them up.
SHAPED_TOKENIZERS = {"patch2d", "patch1d", "features"}
REQUIRED = ("build", "pretrain_data", "eval_data", "has_split")


def tiny(name: str):
    recipe, overrides = TINY[name]
    return load_recipe(recipe, overrides)


def tokenizer_kinds(method: torch.nn.Module) -> set[str]:
    return {
        m.tokenizer_config.get("kind")
        for m in method.modules()
        if isinstance(getattr(m, "tokenizer_config", None), dict)
    }


def test_every_method_and_packaged_recipe_is_covered_here():
    assert set(TINY) == set(METHODS)
    assert {load_recipe(name).method for name in list_recipes()} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_resolves_to_a_spec_that_fills_the_contract(name):
    spec = method_spec(name)
    assert isinstance(spec, MethodSpec) and spec.name == name
    assert recipe_class(name) is spec.recipe and spec.recipe().method == name
    assert isinstance(tiny(name), spec.recipe)
    if spec.run_pretrain is None:  # trained by the shared trainer: every required hook
        assert all(callable(getattr(spec, hook)) for hook in REQUIRED)
    else:  # an analysis with its own loop may leave them out
        assert callable(spec.run_pretrain)
    for hook in ("synthetic_data", "run_probe"):
        assert getattr(spec, hook) is None or callable(getattr(spec, hook))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_with_a_shaped_tokenizer_have_synthetic_data_of_batch_first_tensors(name):
    spec, recipe = method_spec(name), tiny(name)
    if spec.synthetic_data is None:
        # Only methods without a 2-D / 1-D / feature tokenizer may lack it.
        if spec.build is not None:
            assert not tokenizer_kinds(spec.build(recipe)) & SHAPED_TOKENIZERS
        return
    dataset, collate = spec.synthetic_data(recipe)  # before build: T-JEPA fits its columns
    size = 4
    batch = collate([dataset[(i, 100 + i, 7)] for i in range(size)])
    assert batch and all(t.shape[0] == size for t in batch.values()), {
        k: tuple(t.shape) for k, t in batch.items()
    }
    torch.manual_seed(0)
    out = spec.build(recipe)(batch)
    assert torch.isfinite(out["loss"])


def test_pretrain_data_is_typed_and_still_unpacks_as_three():
    spec, recipe = method_spec("ijepa"), tiny("ijepa")
    data = spec.pretrain_data(recipe, "builtin:shapes")
    assert isinstance(data, PretrainData) and data.collate is data[1]
    dataset, collate, source = data
    assert len(dataset) > 0 and source.skipped == []
    concepts = method_spec("concept-jepa").pretrain_data(tiny("concept-jepa"), None)
    assert isinstance(concepts, PretrainData)


def test_a_missing_hook_is_a_user_error_naming_the_method():
    with pytest.raises(
        UserError,
        match=r"^method 'concept-jepa' has no synthetic data: "
        r"pass --data$",
    ):
        method_spec("concept-jepa").require("synthetic_data", "pass --data")
    linear = method_spec("linear-jepa-mae")
    with pytest.raises(
        UserError,
        match="method 'linear-jepa-mae' has no labelled data set: it "
        "is an analysis run by `jepactl pretrain linear",
    ):
        linear.require("eval_data")
    assert method_spec("ijepa").require("build") is method_spec("ijepa").build
    with pytest.raises(RecipeError, match="did you mean 'ijepa'"):
        method_spec("ijepaa")


def test_a_spec_without_its_required_hooks_is_refused():
    with pytest.raises(TypeError, match="needs pretrain_data"):
        MethodSpec(
            "x",
            object,
            build=lambda r: None,
            pretrain_data=None,
            eval_data=lambda *a, **k: None,
            has_split=lambda *a: False,
        )


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_bench_runs_dmt_jepa_without_data():
    result = invoke(
        "bench",
        "image/dmt-jepa",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        *TINY_IMAGE_OVERRIDES,
        "model.patch_size=4",
        "aggregation.depth=1",
    )
    assert result.exit_code == 0, result.output
    assert "samples" in result.stdout


def test_bench_on_an_analysis_is_a_one_line_user_error():
    result = invoke("bench", "linear/linear-jepa-mae", "--steps", "1")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "method 'linear-jepa-mae' has no torch module" in lines[0]
