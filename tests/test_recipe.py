"""Recipes: typed loading, overrides, error messages that name the key, and round trips."""

from __future__ import annotations

import pytest
import yaml

from jepactl.errors import RecipeError
from jepactl.recipe import (
    dump_recipe,
    list_recipes,
    load_recipe,
    parse_override,
    recipe_from_dict,
    to_dict,
)


def test_every_packaged_recipe_loads_and_round_trips_through_yaml():
    names = list_recipes()
    assert "image/ijepa" in names and "image/ijepa-cpu" in names
    for name in names:
        recipe = load_recipe(name)
        again = recipe_from_dict(yaml.safe_load(dump_recipe(recipe)))
        assert to_dict(again) == to_dict(recipe), name


def test_overrides_set_typed_values():
    recipe = load_recipe(
        "image/ijepa-cpu",
        [
            "train.batch_size=7",
            "optim.lr=3e-4",
            "mask.target_scale=[0.1,0.3]",
            "train.compile=true",
        ],
    )
    assert recipe.train.batch_size == 7
    assert recipe.optim.lr == pytest.approx(3e-4)
    assert recipe.mask.target_scale == (0.1, 0.3)
    assert recipe.train.compile is True


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(RecipeError, match=r"'train\.batchsize'.*did you mean 'train\.batch_size'"):
        load_recipe("image/ijepa-cpu", ["train.batchsize=3"])
    with pytest.raises(RecipeError, match=r"unknown recipe key 'modle'.*'model'"):
        load_recipe("image/ijepa-cpu", ["modle.depth=3"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(RecipeError, match=r"'train\.batch_size': expected an integer, got 'abc'"):
        load_recipe("image/ijepa-cpu", ["train.batch_size=abc"])
    with pytest.raises(
        RecipeError, match=r"'train\.precision': expected one of 'fp32', 'bf16', 'fp16'"
    ):
        load_recipe("image/ijepa-cpu", ["train.precision=fp8"])
    with pytest.raises(RecipeError, match=r"'optim\.betas': expected a list of 2 values"):
        load_recipe("image/ijepa-cpu", ["optim.betas=0.9"])


def test_ints_are_accepted_for_floats_but_not_bools_for_ints():
    assert load_recipe("image/ijepa-cpu", ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(RecipeError):
        load_recipe("image/ijepa-cpu", ["train.batch_size=true"])


def test_unknown_recipe_suggests_a_close_name():
    with pytest.raises(RecipeError, match=r"unknown recipe 'image/ijepa-cup'.*'image/ijepa-cpu'"):
        load_recipe("image/ijepa-cup")


def test_domain_name_resolves_to_its_default_and_base_chain_merges():
    recipe = load_recipe("image")
    assert recipe.name == "image/ijepa"
    assert recipe.model.embed_dim == 768 and recipe.train.max_steps == 375000
    cpu = load_recipe("image/dmt-jepa-cpu")  # dmt-jepa-cpu -> ijepa-cpu -> ijepa
    assert (cpu.method, cpu.model.embed_dim, cpu.train.max_steps) == ("dmt-jepa", 192, 400)


def test_override_parsing_keeps_strings_and_parses_yaml_scalars():
    assert parse_override("data.path=./x") == (["data", "path"], "./x")
    assert parse_override("optim.lr=1.0e-3") == (["optim", "lr"], 1e-3)
    assert load_recipe("image/ijepa-cpu", ["optim.lr=1e-3"]).optim.lr == 1e-3  # YAML 1.1 quirk
    with pytest.raises(RecipeError, match="section.key=value"):
        parse_override("optim.lr")


def test_recipe_file_path_is_accepted(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: image/ijepa-cpu\ntrain:\n  max_steps: 12\n")
    recipe = load_recipe(str(path))
    assert recipe.train.max_steps == 12 and recipe.model.embed_dim == 192
