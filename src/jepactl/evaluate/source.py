"""Where evaluation gets its encoder and labelled data: a run folder or an exported model."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from jepactl.errors import UserError
from jepactl.methods.probe_request import ProbeRequest
from jepactl.recipe import Recipe, recipe_from_dict
from jepactl.registry import method_spec
from jepactl.runs import TrainedMethod, is_run_dir, open_trained_method, read_run_recipe


@dataclass
class EncoderSource:
    recipe: Recipe
    encoder: nn.Module
    tag: str  # identifies the weights, for feature caches
    cache_dir: Path | None


def is_export_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and not is_run_dir(path)


def open_recipe(path: Path) -> Recipe:
    """Return the recipe of a run folder, or the one stored in an export's config.json."""
    if is_export_dir(path):
        return recipe_from_dict(json.loads((path / "config.json").read_text())["recipe"])
    return read_run_recipe(path)


def request_encoder(request: ProbeRequest, recipe: Recipe) -> EncoderSource:
    """The encoder a probe request names: its run, ``--which``, ``--random-init`` and
    ``--checkpoint``, with the probe's recipe (``probe.*`` overrides applied)."""
    return open_encoder(
        request.run,
        request.which,
        request.random_init,
        recipe=recipe,
        checkpoint=request.checkpoint,
    )


def open_encoder(
    path: Path,
    which: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    recipe: Recipe | None = None,
    checkpoint: str = "last",
) -> EncoderSource:
    """Return the encoder to evaluate from a run folder or an export folder.

    ``checkpoint`` (``--checkpoint``): which of a run's checkpoints, "last", "best" or a step
    number as text; an export holds one set of weights, so it takes "last" alone.
    """
    recipe = recipe or open_recipe(path)
    if is_export_dir(path):
        _refuse_checkpoint_for_export(checkpoint)
        from jepactl.export import load_encoder

        encoder = load_encoder(path)
        if random_init:
            torch.manual_seed(seed)
            encoder = type(encoder)(encoder.tokenizer_config, encoder.config)
        return EncoderSource(recipe, encoder.eval(), f"export-{random_init}", None)
    which = which or recipe.probe.which
    if which not in ("target", "context"):
        raise UserError(f"--which must be 'target' or 'context', got '{which}'")
    if random_init:
        _refuse_checkpoint_for_random_init(checkpoint)
        torch.manual_seed(seed)
        method = method_spec(recipe.method).require("build")(recipe)
        return EncoderSource(
            recipe, method.encoder(which).eval(), f"random{seed}-{which}", path / "cache"
        )
    trained = open_trained_method(path, recipe, checkpoint)
    return EncoderSource(
        trained.recipe,
        trained.method.encoder(which).eval(),
        f"{weights_tag(trained)}-{which}",
        path / "cache",
    )


def open_method(
    path: Path, recipe: Recipe, random_init: bool, needed_by: str, checkpoint: str = "last"
) -> tuple[nn.Module, str]:
    """Return (the run's whole method with the weights of ``checkpoint``, or a seeded untrained
    one of the same shape; a tag for feature caches). ``needed_by`` names the caller in the
    error for an exported encoder, which holds the encoder alone."""
    if random_init:
        _refuse_checkpoint_for_random_init(checkpoint)
        torch.manual_seed(recipe.probe.seed)
        return method_spec(recipe.method).require("build")(recipe).eval(), "random-init"
    if not is_run_dir(Path(path)):
        raise UserError(
            f"'{path}' is not a run folder: {needed_by} needs the whole trained method, and an "
            "export holds the encoder alone"
        )
    trained = open_trained_method(Path(path), recipe, checkpoint)
    return trained.method, weights_tag(trained)


def weights_tag(trained: TrainedMethod) -> str:
    """Return ``step{N}`` for a step checkpoint, ``best{N}`` for best.safetensors: feature caches
    are keyed by it, and the same step means the same weights only within the same file."""
    return f"{'best' if trained.is_best else 'step'}{trained.step}"


def _refuse_checkpoint_for_export(checkpoint: str) -> None:
    if str(checkpoint).strip() != "last":
        raise UserError("--checkpoint applies to run folders, not exports")


def _refuse_checkpoint_for_random_init(checkpoint: str) -> None:
    if str(checkpoint).strip() != "last":
        raise UserError(
            "--checkpoint does not apply with --random-init, which evaluates an untrained "
            "encoder of the same shape"
        )


def labelled_splits(
    recipe: Recipe,
    data: str | None,
    test: str | None,
    test_fraction: float,
    seed: int,
    augment_train: bool = False,
    labels: str | None = None,
    label_option: str | None = None,
):
    """Return (train dataset, test dataset, description) with labels, choosing splits sensibly.

    ``data`` defaults to the run's training data. With no ``test``, the data's own test split is
    used when it has one, otherwise a seeded ``test_fraction`` of the training data.
    ``labels`` (``probe --labels``): a label CSV, for the method's ``label_file`` rows, that
    labels both ``data`` and ``test``; ``label_option`` (``--labels``) is named in the error
    for unlabelled data where the caller takes a label file.
    """
    spec = method_spec(recipe.method)
    eval_data, has_split = spec.require("eval_data"), spec.require("has_split")
    if labels is not None:
        spec.require_label_file()
        eval_data = functools.partial(eval_data, labels=labels)
    data = data or recipe.data.path
    if data is None:
        raise UserError("no labelled data: pass --data PATH")
    if test is not None:
        train_set = eval_data(
            recipe,
            data,
            "train" if has_split(recipe, data, "train") else None,
            augment=augment_train,
            seed=seed,
        )
        test_set = eval_data(recipe, test, "test" if has_split(recipe, test, "test") else None)
        described = f"train={data} test={test}"
    elif has_split(recipe, data, "test"):
        train_set = eval_data(recipe, data, "train", augment=augment_train, seed=seed)
        test_set = eval_data(recipe, data, "test")
        described = f"{data} train/test splits"
    else:
        full = eval_data(recipe, data, None)
        plain = full
        if augment_train:
            full = eval_data(recipe, data, None, augment=True, seed=seed)
        order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(seed))
        cut = int(round(len(plain) * (1 - test_fraction)))
        train_set = Subset(full, order[:cut])
        test_set = Subset(plain, order[cut:])
        described = f"{data} seeded {1 - test_fraction:.0%}/{test_fraction:.0%} split (seed {seed})"
    if labels is not None:
        described += f" labels={labels}"
    for name, ds in (("training", train_set), ("test", test_set)):
        if getattr(ds, "task", "classification") == "regression":
            continue  # real-valued labels (a tabular regression target): no classes to check
        if len(getattr(ds, "classes", [])) == 0 or bool((ds.labels < 0).any()):
            how = (
                f"{label_option} FILE.csv of {spec.label_file} rows, "
                if label_option and spec.label_file
                else ""
            )
            raise UserError(
                f"the {name} data has no labels (use {how}class sub-folders, or a "
                "label column in parquet/arrow data)"
            )
    return train_set, test_set, described


class Subset(torch.utils.data.Dataset):
    """A labelled subset that keeps ``labels`` and ``classes`` visible."""

    def __init__(self, dataset, indices: torch.Tensor) -> None:
        self.dataset, self.indices = dataset, indices
        self.labels = dataset.labels[indices]
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]

    def __getattr__(self, name: str):
        # Anything else (task, target_std, in_memory, ...) is the wrapped dataset's. Dunder and
        # "dataset" lookups fail normally so copying and unpickling never recurse.
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    @property
    def epoch(self) -> int:
        return getattr(self.dataset, "epoch", 0)

    @epoch.setter
    def epoch(self, value: int) -> None:
        if hasattr(self.dataset, "epoch"):
            self.dataset.epoch = value
