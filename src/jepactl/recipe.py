"""Recipes: YAML files turned into typed, validated dataclass configs.

A recipe names a ``method`` (``ijepa``, ``ecg-jepa``, ...). The method registry maps that name
to one dataclass tree (a subclass of :class:`Recipe`) whose field defaults are *every* default
the run uses, so ``jepactl recipes show NAME`` prints all of them in one place. YAML values and
``section.key=value`` overrides are checked against the field types (``typed_config.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from jepactl.errors import RecipeError
from jepactl.typed_config import build_dataclass, field_default, to_dict

# --------------------------------------------------------------------------------------------
# Sections shared by every method. Method recipes subclass Recipe and narrow data/model/mask.
# --------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    """AdamW with warmup + cosine learning rate and a cosine weight-decay schedule (per step)."""

    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_steps: int = 100
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 0.0  # max global grad norm; 0 disables clipping


@dataclass
class EmaConfig:
    """Target-encoder momentum, linear from ``start`` to ``end`` over the run (per step)."""

    start: float = 0.996
    end: float = 1.0


@dataclass
class LossConfig:
    kind: Literal["smooth_l1", "l1", "mse", "cosine"] = "smooth_l1"
    # How targets are normalised before the loss: I-JEPA applies a parameter-free LayerNorm.
    target_norm: Literal["layer_norm", "none"] = "layer_norm"


@dataclass
class TrainConfig:
    """``batch_size`` is the effective batch: samples per optimizer step, per process (the
    recipe's lr, EMA and schedules are tied to it). ``micro_batch_size`` is how many of them go
    through one forward/backward; ``auto`` measures the largest that fits this machine's memory
    and accumulates gradients over the pieces (``micro_batch.py``)."""

    batch_size: int = 64  # effective batch per optimizer step, per process
    micro_batch_size: int | Literal["auto"] = "auto"
    max_steps: int = 1000  # optimizer steps
    # bf16 falls back to fp16 with a gradient scaler on devices without bf16 (precision.py).
    precision: Literal["fp32", "bf16", "fp16"] = "bf16"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    # DataLoader workers, capped at the CPUs this process may use minus one (auto: up to 8).
    num_workers: int | Literal["auto"] = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    # Experiment trackers (trackers.py): any of tensorboard, wandb, mlflow, trackio; each also
    # gets the metrics.jsonl scalars. Their packages are extras: pip install "jepactl[NAME]".
    trackers: list[str] = field(default_factory=list)


@dataclass
class EvalConfig:
    """Online probes during pretraining (evaluate/online.py) and the best checkpoint."""

    # Optimizer steps between online probes: auto is a fifth of the run (rounded up to a
    # multiple of train.log_every; off for runs under 100 steps); 0 turns them off. Sized so
    # the probes cost about a tenth of the run (benchmarks/RESULTS.md, online probes).
    every: int | Literal["auto"] = "auto"
    fit_samples: int = 1000  # labelled samples the linear and kNN probes are fitted on
    score_samples: int = 500  # held-out labelled samples they are scored on
    batch_size: int = 256
    seed: int = 0  # picks the samples; fixed for the run
    # checkpoints/best.safetensors keeps the step with the best value of this metrics.jsonl
    # key: auto is online_linear_accuracy (higher is better) with an online probe, else loss
    # (lower is better) at each checkpoint.
    select: str = "auto"


@dataclass
class CheckpointConfig:
    keep: int = 2  # newest checkpoints kept; an unreadable newest one falls back to the previous


@dataclass
class ProbeConfig:
    """Frozen-encoder probes: logistic regression and kNN on pooled features."""

    which: Literal["target", "context"] = "target"
    batch_size: int = 256
    linear_epochs: int = 100
    linear_lr: float = 1e-2
    linear_weight_decay: float = 1e-4
    knn_k: int = 20
    knn_temperature: float = 0.07
    test_fraction: float = 0.2  # used only when no test split exists
    seed: int = 0


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning of encoder + linear head."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    final_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    layer_decay: float = 0.75  # layer-wise lr decay: block i gets lr * decay**(depth - i)
    label_smoothing: float = 0.1
    which: Literal["target", "context"] = "target"
    seed: int = 0


@dataclass
class Recipe:
    """Base of every method's recipe. Subclasses add ``data``, ``model``, ``mask`` and so on."""

    name: str = ""
    domain: str = ""
    method: str = ""
    description: str = ""
    source: str = ""
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


# Keys a resumed run may change: how long, how often it logs and saves, how the batch is cut,
# where the data lives, what is watched. Anything else changes the model or its training.
RESUME_MAY_CHANGE = (
    "name",
    "description",
    "source",
    "data.path",
    "train.max_steps",
    "train.log_every",
    "train.checkpoint_every",
    "train.num_workers",
    "train.micro_batch_size",
    "train.compile",
    "train.activation_checkpointing",
    "train.trackers",
    "checkpoint.",
    "eval.",
    "probe.",
    "finetune.",
)


def resume_differences(stored: "Recipe", given: "Recipe") -> list[str]:
    """Return ``key: run's value -> given value`` for every key that differs between a run's
    recipe and the one a command gives, where a resumed run may not differ. Values filled by
    pretraining (``*.fitted``) are the run's own and never compared."""
    flat_stored, flat_given = _flatten(to_dict(stored)), _flatten(to_dict(given))
    changed = []
    for key in sorted(set(flat_stored) | set(flat_given)):
        if key.split(".")[-1] == "fitted" or ".fitted." in key:
            continue
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_MAY_CHANGE):
            continue
        before, after = flat_stored.get(key), flat_given.get(key)
        if before != after:
            changed.append(f"{key}: {before!r} -> {after!r}")
    return changed


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


# --------------------------------------------------------------------------------------------
# Overrides and lookup
# --------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """Return (key path, YAML-parsed value) for ``section.key=value``."""
    if "=" not in text:
        raise RecipeError(f"override '{text}' is not of the form section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override '{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def recipes_root() -> Path:
    """Return the folder of packaged recipes (installed wheel, or the repository checkout)."""
    packaged = resources.files("jepactl") / "recipes"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "recipes"


# Packaged recipes are named ``<domain>/<method>[-<variant>][-<scale>]`` (recipes/README.md):
# no scale word is the paper's configuration, ``-s`` another of the paper's model sizes, ``-cpu``
# sized to train in minutes on a laptop CPU. ``recipes/<domain>/DEFAULT`` names the recipe that
# the bare domain (``jepactl pretrain ecg``) stands for. The names of 0.2.0 (RENAMED) still
# resolve, with a deprecation line, until ALIASES_REMOVED_IN.
ALIASES_REMOVED_IN = "0.3"
RENAMED: dict[str, str] = {
    "image/default": "image/ijepa",
    "image/tiny": "image/ijepa-cpu",
    "image/dmt-tiny": "image/dmt-jepa-cpu",
    "ecg/default": "ecg/ecg-jepa",
    "ecg/cpu": "ecg/ecg-jepa-cpu",
    "sar/default": "sar/sar-jepa",
    "sar/cpu": "sar/sar-jepa-cpu",
    "sar/pixel-targets": "sar/sar-jepa-pixel-targets-cpu",
    "sar/ema-targets": "sar/sar-jepa-ema-targets-cpu",
    "tabular/default": "tabular/tjepa",
    "tabular/cpu": "tabular/tjepa-cpu",
    "concepts/default": "concepts/concept-jepa-cpu",
    "concepts/entangled": "concepts/concept-jepa-entangled-cpu",
    "concepts/entangled-memory": "concepts/concept-jepa-entangled-memory-cpu",
    "concepts/lm": "concepts/concept-lm-cpu",
    "concepts/lm-untied": "concepts/concept-lm-untied-cpu",
    "linear/default": "linear/linear-jepa-mae",
    "linear/jepa-vs-mae": "linear/linear-jepa-mae",
    "linear/jepa-vs-mae-samples": "linear/linear-jepa-mae-samples",
    "linear/lambda-order": "linear/linear-jepa-mae-lambda-order",
    "linear/rho-order": "linear/linear-jepa-mae-rho-order",
}


def list_recipes() -> list[str]:
    """Return every packaged recipe name (``domain/name``); the old names are not listed."""
    root = recipes_root()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def domain_default(domain: str) -> str | None:
    """Return the recipe the bare ``domain`` stands for (its ``DEFAULT`` file), or None."""
    path = recipes_root() / domain / "DEFAULT"
    if not path.is_file():
        return None
    stem = path.read_text().strip()
    if not stem or "/" in stem or not (path.parent / f"{stem}.yaml").is_file():
        raise RecipeError(
            f"'{path}' must name one recipe of the domain (a file name without .yaml), not {stem!r}"
        )
    return f"{domain}/{stem}"


def current_name(name: str, warn: bool = True) -> str:
    """Return the current name of a recipe renamed since 0.2.0 (any other name unchanged); with
    ``warn``, say so on the jepactl logger."""
    new = RENAMED.get(name)
    if new is None:
        return name
    if warn:
        logging.getLogger("jepactl").warning(
            "recipe '%s' is now '%s' (the old name works until %s)", name, new, ALIASES_REMOVED_IN
        )
    return new


def cpu_recipe(recipe: Recipe) -> str:
    """Return the name of the recipe's CPU-sized sibling (``<domain>/<method>-cpu``), or ''."""
    name = f"{recipe.domain}/{recipe.method}-cpu"
    if name == recipe.name or not (recipes_root() / f"{name}.yaml").is_file():
        return ""
    return name


def resolve_recipe_path(name: str) -> Path:
    """Return the YAML file for a recipe name, a domain name (its default) or a path."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate
        raise RecipeError(f"recipe file '{name}' does not exist")
    root = recipes_root()
    name = current_name(name)
    path = root / f"{name}.yaml"
    if path.is_file():
        return path
    default = domain_default(name) if "/" not in name else None
    if default is not None:
        return root / f"{default}.yaml"
    names = list_recipes() + sorted({n.split("/")[0] for n in list_recipes()}) + list(RENAMED)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
    hint = f"; did you mean '{current_name(close[0], warn=False)}'?" if close else ""
    raise RecipeError(f"unknown recipe '{name}'{hint} (see `jepactl recipes list`)")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        message = f"recipe file '{path}' is not valid YAML: {err}".splitlines()[0]
        raise RecipeError(message) from None
    except OSError as err:
        raise RecipeError(f"cannot read recipe file '{path}': {err.strerror}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file '{path}' must be a mapping of sections")
    return data


def deep_merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``child``, merging nested sections key by key."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_recipe_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Return the raw recipe at ``path`` with its ``base:`` chain merged underneath it."""
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_path = resolve_recipe_path(str(base))
    if base_path.resolve() in seen:
        raise RecipeError(f"recipe '{path}' has a circular base: chain")
    parent = read_recipe_tree(base_path, seen + (path.resolve(),))
    parent.pop("name", None)
    return deep_merge(parent, raw)


def load_recipe(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Return the validated recipe ``name`` (name, domain or path) with overrides applied.

    A recipe may start from another with ``base: domain/name`` and change only some keys.
    An old name (RENAMED) is a drop-in until it is removed: the recipe keeps the name it was
    asked by, so run folders and ``--json`` output read as before.
    """
    path = resolve_recipe_path(name)
    raw = read_recipe_tree(path)
    if name in RENAMED:
        raw["name"] = name
    elif not raw.get("name"):
        root = recipes_root()
        try:
            raw["name"] = str(path.resolve().relative_to(root.resolve()).with_suffix(""))
        except ValueError:
            raw["name"] = path.stem
    for text in overrides:
        key, value = parse_override(text)
        apply_override(raw, key, value)
    return recipe_from_dict(raw)


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    """Return the typed recipe for a plain dict (as read from YAML or a run's recipe.yaml)."""
    from jepactl.registry import recipe_class

    method = raw.get("method")
    if not isinstance(method, str) or not method:
        raise RecipeError("recipe key 'method' is missing (e.g. method: ijepa)")
    cls = recipe_class(method)
    _upgrade_grad_accum(raw, cls)
    return build_dataclass(cls, raw)


def _upgrade_grad_accum(raw: dict[str, Any], cls: type) -> None:
    """Read recipes from before 0.2: ``train.batch_size`` was one micro-batch and
    ``train.grad_accum`` counted them; now batch_size is the effective batch."""
    train = raw.get("train")
    hints = typing.get_type_hints(cls)
    if (
        not isinstance(train, dict)
        or "grad_accum" not in train
        or "micro_batch_size" not in {f.name for f in fields(hints["train"])}
    ):
        return
    accum = train.pop("grad_accum")
    if not isinstance(accum, int) or isinstance(accum, bool) or accum < 1:
        raise RecipeError(
            f"recipe key 'train.grad_accum': expected a positive integer, got "
            f"{accum!r} (deprecated: set train.batch_size to the effective batch "
            "and train.micro_batch_size instead)"
        )
    if accum > 1:
        micro = train.get(
            "batch_size",
            field_default(next(f for f in fields(cls) if f.name == "train")).batch_size,
        )
        train["batch_size"] = micro * accum
        train.setdefault("micro_batch_size", micro)
        logging.getLogger("jepactl").warning(
            "train.grad_accum is deprecated: read as train.batch_size=%s (the effective batch) "
            "and train.micro_batch_size=%s",
            train["batch_size"],
            train["micro_batch_size"],
        )


HEADER_KEYS = ("name", "domain", "method", "description", "source")


def dump_recipe(recipe: Recipe) -> str:
    """Return the recipe as YAML: header, then method sections, then the shared ones."""
    tree = to_dict(recipe)
    shared = [f.name for f in fields(Recipe) if f.name not in HEADER_KEYS]
    order = [*HEADER_KEYS, *[k for k in tree if k not in HEADER_KEYS and k not in shared], *shared]
    return yaml.dump(
        {k: tree[k] for k in order},
        Dumper=_RecipeDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )


class _RecipeDumper(yaml.SafeDumper):
    """Block-style sections, but short lists inline (``crop_scale: [0.3, 1.0]``)."""


_RecipeDumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True),
)


def replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **changes)
