"""Recipe names (recipes/README.md): <domain>/<method>[-<variant>][-<scale>], a DEFAULT per
domain, the 0.2.0 names as deprecated aliases, each value written once, results in the table."""

from __future__ import annotations

import copy
import json
import logging
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from jepactl.cli import app
from jepactl.errors import RecipeError
from jepactl.recipe import (
    HEADER_KEYS,
    RENAMED,
    cpu_recipe,
    deep_merge,
    domain_default,
    dump_recipe,
    list_recipes,
    load_recipe,
    read_recipe_tree,
    read_yaml,
    recipe_from_dict,
    recipes_root,
    resolve_recipe_path,
    to_dict,
)

ROOT = recipes_root()
NAMES = list_recipes()
DOMAINS = sorted({name.split("/")[0] for name in NAMES})
SCALES = ("cpu", "s")  # the scale words recipes/README.md defines


def resolved(name: str) -> dict:
    tree = to_dict(load_recipe(name))
    tree.pop("name")
    return tree


def test_every_recipe_is_named_domain_slash_method_variant_scale():
    assert NAMES, "no packaged recipes"
    for name in NAMES:
        domain, stem = name.split("/")
        recipe = load_recipe(name)
        assert recipe.domain == domain, name
        assert stem == recipe.method or stem.startswith(recipe.method + "-"), name
        words = stem[len(recipe.method) :].split("-")[1:]
        assert "tiny" not in words and "default" not in words, name
        assert all(w not in SCALES for w in words[:-1]), f"{name}: the scale word comes last"


def test_cpu_and_paper_recipes_differ_in_scale():
    """A -cpu recipe is smaller than the paper recipe it scales down (fewer steps x samples)."""
    pairs = [(n, n[: -len("-cpu")]) for n in NAMES if n.endswith("-cpu") and n[:-4] in NAMES]
    assert {
        "image/ijepa-cpu",
        "ecg/ecg-jepa-cpu",
        "sar/sar-jepa-cpu",
        "tabular/tjepa-cpu",
        "image/dmt-jepa-cpu",
    } <= {cpu for cpu, _ in pairs}
    for cpu, paper in pairs:
        small, big = load_recipe(cpu).train, load_recipe(paper).train
        assert small.max_steps * small.batch_size < big.max_steps * big.batch_size, cpu


def test_every_domain_has_a_default_that_the_domain_name_loads():
    expected = {
        "image": "image/ijepa",
        "ecg": "ecg/ecg-jepa",
        "sar": "sar/sar-jepa",
        "tabular": "tabular/tjepa",
        "concepts": "concepts/concept-jepa-cpu",
        "linear": "linear/linear-jepa-mae",
        "views": "views/seq-jepa",
        "policy": "policy/act-jepa",
        "lidar": "lidar/ad-l-jepa",
    }
    assert DOMAINS == sorted(expected)
    for domain, name in expected.items():
        assert domain_default(domain) == name
        assert load_recipe(domain).name == name
        assert resolved(domain) == resolved(name)


def test_a_default_file_naming_a_missing_recipe_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "DEFAULT").write_text("nope\n")
    monkeypatch.setattr("jepactl.recipe.recipes_root", lambda: tmp_path)
    with pytest.raises(RecipeError, match="DEFAULT' must name one recipe"):
        load_recipe("image")


@pytest.mark.parametrize("old, new", sorted(RENAMED.items()))
def test_old_names_still_load_with_one_deprecation_line(old, new, caplog):
    assert new in NAMES and old not in NAMES
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        recipe = load_recipe(old)
    lines = [r.getMessage() for r in caplog.records if r.name == "jepactl"]
    assert lines == [f"recipe '{old}' is now '{new}' (the old name works until 0.3)"]
    assert recipe.name == old  # a drop-in: run folders and --json name what was asked for
    assert resolved(old) == resolved(new)


def test_new_names_load_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        for name in NAMES + DOMAINS:
            load_recipe(name)
    assert not [r for r in caplog.records if r.name == "jepactl"]


def test_a_user_recipe_whose_base_is_an_old_name_still_loads(tmp_path, caplog):
    path = tmp_path / "mine.yaml"
    path.write_text("base: image/tiny\ntrain:\n  max_steps: 12\n")
    with caplog.at_level(logging.WARNING, logger="jepactl"):
        recipe = load_recipe(str(path))
    assert recipe.train.max_steps == 12 and recipe.model.embed_dim == 192
    assert any("'image/tiny' is now 'image/ijepa-cpu'" in r.getMessage() for r in caplog.records)


def test_a_run_folder_recipe_written_with_an_old_name_loads(tmp_path):
    """A 0.2.0 run's recipe.yaml is fully resolved and names the recipe it was made from."""
    from jepactl.runs import read_run_recipe

    run = tmp_path / "run"
    run.mkdir()
    text = dump_recipe(load_recipe("ecg/ecg-jepa-cpu")).replace(
        "name: ecg/ecg-jepa-cpu", "name: ecg/cpu", 1
    )
    (run / "recipe.yaml").write_text(text)
    recipe = read_run_recipe(run)
    assert recipe.name == "ecg/cpu"
    assert to_dict(recipe) == dict(to_dict(load_recipe("ecg/ecg-jepa-cpu")), name="ecg/cpu")
    assert load_recipe(str(run / "recipe.yaml")).name == "ecg/cpu"


def test_a_close_old_name_suggests_its_new_name():
    with pytest.raises(RecipeError, match=r"unknown recipe 'image/tiyn'.*'image/ijepa-cpu'"):
        load_recipe("image/tiyn")


def test_recipes_list_shows_only_new_names():
    result = CliRunner().invoke(app, ["recipes", "list", "--json"])
    listed = [r["name"] for r in json.loads(result.stdout)]
    assert listed == NAMES and not set(RENAMED) & set(listed)


@pytest.mark.slow
def test_recipes_show_of_an_old_name_prints_one_warning_line_on_stderr():
    def show(name):  # a real process: the CLI's own logging setup writes the warning
        return subprocess.run(
            [sys.executable, "-m", "jepactl", "recipes", "show", name],
            capture_output=True,
            text=True,
            check=True,
        )

    old, new = show("ecg/cpu"), show("ecg/ecg-jepa-cpu")
    assert old.stdout.replace("name: ecg/cpu\n", "name: ecg/ecg-jepa-cpu\n", 1) == new.stdout
    assert not new.stderr.strip()
    assert old.stderr.strip().splitlines() == [
        "WARNING: recipe 'ecg/cpu' is now 'ecg/ecg-jepa-cpu' (the old name works until 0.3)"
    ]


def test_cpu_recipe_names_the_cpu_sized_sibling():
    assert cpu_recipe(load_recipe("ecg")) == "ecg/ecg-jepa-cpu"
    assert cpu_recipe(load_recipe("image/dmt-jepa")) == "image/dmt-jepa-cpu"
    assert cpu_recipe(load_recipe("ecg/ecg-jepa-cpu")) == ""
    assert cpu_recipe(load_recipe("linear")) == ""


# ------------------------------------------------------------------ each value written once


def _leaves(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,)


def _resolve_raw(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    base = raw.pop("base", None)
    if base is not None:
        parent = read_recipe_tree(resolve_recipe_path(str(base)))
        parent.pop("name", None)
        raw = deep_merge(parent, raw)
    tree = to_dict(recipe_from_dict(raw))
    tree.pop("name", None)
    return tree


@pytest.mark.parametrize("name", NAMES)
def test_no_yaml_key_repeats_the_value_it_would_have_anyway(name):
    """Paper defaults are written once: a key equal to the method's dataclass default (or, for
    a recipe with ``base:``, to its base's value) is a duplicate. Remove it from the YAML."""
    raw = read_yaml(resolve_recipe_path(name))
    full = _resolve_raw(raw)
    duplicates = []
    for path in _leaves(raw):
        if path[0] in HEADER_KEYS or path[0] == "base":
            continue
        pruned = copy.deepcopy(raw)
        node = pruned
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
        if _resolve_raw(pruned) == full:
            duplicates.append(".".join(path))
    assert not duplicates, f"{name}: these keys repeat their default: {duplicates}"


def test_a_section_keeps_the_method_defaults_for_keys_it_does_not_name():
    """``model: {depth: 2}`` over ECG-JEPA keeps its ViT-XS width (the recipe class's default
    section), not the generic encoder's 768."""
    ecg = load_recipe("ecg", ["model.depth=2", "optim.lr=5e-4"])
    assert (ecg.model.depth, ecg.model.embed_dim, ecg.model.patch_size) == (2, 192, 25)
    assert ecg.model.bias is False and ecg.optim.betas == (0.9, 0.99)
    tab = recipe_from_dict({"method": "tjepa", "train": {"max_steps": 5}})
    assert (tab.train.max_steps, tab.train.batch_size) == (5, 512)


# ------------------------------------------------------------------ results live in the table


RESULT_WORDS = re.compile(r"\b(measured|expected result|paper result)\b", re.IGNORECASE)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_comments_quote_no_results(name):
    for line in resolve_recipe_path(name).read_text().splitlines():
        comment = line.split("#", 1)[1] if "#" in line else ""
        assert not RESULT_WORDS.search(comment), f"{name}: {line.strip()}"


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_table_has_one_row_per_recipe_and_its_links_resolve():
    readme = ROOT / "README.md"
    if not (ROOT.parent / "benchmarks").is_dir():
        pytest.skip("needs the repository checkout (recipes/ next to benchmarks/)")
    text = readme.read_text()
    rows = re.findall(r"^\| `([a-z]+/[a-z0-9-]+)`", text, flags=re.MULTILINE)
    assert sorted(rows) == NAMES
    for target, anchor in re.findall(r"\]\((\.\./benchmarks/[^)#]+)#([^)]+)\)", text):
        path = (readme.parent / target).resolve()
        assert path.is_file(), target
        anchors = {
            _slug(line.lstrip("#"))
            for line in path.read_text().splitlines()
            if re.match(r"#{1,6} ", line)
        }
        assert anchor in anchors, f"{target}#{anchor}"


def test_default_files_are_single_names():
    for domain in DOMAINS:
        text = (ROOT / domain / "DEFAULT").read_text()
        assert text.strip() and "\n" not in text.strip(), domain
        assert (ROOT / domain / f"{text.strip()}.yaml").is_file(), domain
