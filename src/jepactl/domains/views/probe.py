"""seq-JEPA's probes: invariance (classification) and equivariance (transformations), frozen.

``jepactl probe RUN`` on a seq-JEPA run (methods.md section 6, "Evaluation"):

* **Invariance:** each image becomes M_val views (``--views 1,3,5``; default ``probe.views``)
  whose aggregate representation (the aggregator's output at the agg token) feeds a linear
  classifier: L2-regularised logistic regression, the strength chosen on 10% of the training
  images (the reference trains a linear layer with AdamW; the same convex problem). Reported as
  ``top1_views{M}``.
* **Equivariance:** two views of each image; an MLP (hidden ``probe.mlp_hidden`` x 2, ReLU) on
  concat(enc(v1), enc(v2)) regresses the relative action from v1 to v2, and one on enc(v1)
  regresses v1's own latent ("individual"); the number of AdamW steps is chosen by early
  stopping on a tenth of the training images. R² on the test images per transformation
  (``relative_r2_rotation``, ...) and over all components (``relative_r2``,
  ``individual_r2``): 1 - sum of squared errors / sum of squares around the test mean.

Views are drawn from seeds fixed by ``probe.seed``, the split and the batch, so every probe of
every run sees the same views; features are cached in the run folder per weights and views.
``probe.which`` (default ``context``, the online encoder the aggregator was trained with) picks
the encoder for both probes.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from jepactl.data.sampling import mix_seed
from jepactl.domains.views.sequences import make_sequences
from jepactl.domains.views.transforms import latent_names
from jepactl.errors import UserError
from jepactl.evaluate.features import default_device
from jepactl.evaluate.metrics import accuracy
from jepactl.evaluate.probe import linear_probe
from jepactl.evaluate.seeds import aggregate
from jepactl.evaluate.source import labelled_splits, open_method
from jepactl.methods.probe_request import ProbeRequest
from jepactl.micro_batch import loader_workers
from jepactl.precision import autocast as autocast_for
from jepactl.recipe import ProbeConfig


@dataclass
class SeqProbeConfig(ProbeConfig):
    which: Literal["target", "context"] = "context"
    views: list[int] = field(default_factory=lambda: [1, 3, 5])  # M_val values
    max_views: int = 16  # the most views one probe sequence may have (features scale with it)
    mlp_hidden: int = 1024  # the equivariance MLP: hidden -> hidden -> output (the reference's)
    mlp_steps: int = 2000  # AdamW steps (the reference: 300 epochs)
    mlp_lr: float = 4e-4
    mlp_weight_decay: float = 1e-3
    mlp_batch_size: int = 256


def view_counts(request: ProbeRequest, cfg: SeqProbeConfig) -> list[int]:
    """Return the M_val values: ``--views`` or ``probe.views``; each in 1..probe.max_views."""
    counts = list(cfg.views)
    if request.views is not None:
        try:
            counts = [int(part) for part in request.views.split(",") if part.strip()]
        except ValueError:
            raise UserError(f"--views: expected counts like 1,3,5, got '{request.views}'") from None
    for count in counts:
        if not 1 <= count <= cfg.max_views:
            raise UserError(
                f"--views {count}: a probe sequence has 1 to probe.max_views={cfg.max_views} views"
            )
    if not counts:
        raise UserError("--views: give at least one count")
    return counts


@torch.no_grad()
def sequence_features(
    method: nn.Module,
    encoder: nn.Module,
    dataset,
    recipe,
    count: int,
    seed: int,
    cache: Path | None,
) -> dict[str, torch.Tensor]:
    """Return features of ``count`` views per image of ``dataset`` (cached under ``cache``).

    ``count == 2`` also returns the pair features for the equivariance probe. Keys: ``labels``,
    ``aggregate`` (N, D'), and with two views ``first`` (N, D), ``pair`` (N, 2D),
    ``relative`` and ``individual`` (the targets).
    """
    cfg = recipe.probe
    if cache is not None:
        key = f"{seed}|{count}|{len(dataset)}|{recipe.train.precision}|{cfg.batch_size}"
        path = cache / f"views-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
    device = default_device()
    method.to(device).eval()
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=loader_workers(2),
    )
    parts: dict[str, list[torch.Tensor]] = {}
    for batch_index, (images, labels) in enumerate(loader):
        gen = torch.Generator().manual_seed(mix_seed(seed, count, batch_index))
        seq = make_sequences(images, recipe.views, recipe.data, count, gen)
        b = images.shape[0]
        with autocast_for(device, recipe.train.precision):
            embeddings = encoder(seq["views"].to(device).flatten(0, 1)).reshape(b, count, -1)
            agg = method.aggregate(embeddings, seq["actions"].to(device))
        found = {"labels": torch.as_tensor(labels), "aggregate": agg.float().cpu()}
        if count == 2:
            z = embeddings.float().cpu()
            found |= {
                "first": z[:, 0],
                "pair": z.flatten(1),
                "relative": seq["actions"][:, 0],
                "individual": seq["latents"][:, 0],
            }
        for name, value in found.items():
            parts.setdefault(name, []).append(value)
    features = {name: torch.cat(values) for name, values in parts.items()}
    if cache is not None:
        from jepactl.checkpoint import atomic_save

        cache.mkdir(parents=True, exist_ok=True)
        atomic_save(features, path)
    return features


def fit_mlp_regressor(
    x: torch.Tensor, y: torch.Tensor, cfg: SeqProbeConfig, seed: int
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return (MLP, standardisation stats) regressing standardised ``y`` on standardised ``x``.

    A seeded tenth of the training rows is held out; the MLP is checked on it every
    ``mlp_steps // 20`` steps and the best checkpoint kept (early stopping), because a
    1024-wide MLP fitted for a fixed number of steps on a few thousand rows overfits.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    held, fit = order[: max(1, len(x) // 10)], order[max(1, len(x) // 10) :]
    x_mean, x_std = x[fit].mean(0), x[fit].std(0).clamp_min(1e-6)
    y_mean, y_std = y[fit].mean(0), y[fit].std(0).clamp_min(1e-6)
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    h = cfg.mlp_hidden
    mlp = nn.Sequential(
        nn.Linear(x.shape[1], h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, y.shape[1])
    )
    opt = torch.optim.AdamW(mlp.parameters(), lr=cfg.mlp_lr, weight_decay=cfg.mlp_weight_decay)
    every = max(1, cfg.mlp_steps // 20)
    best_error, best_state = float("inf"), copy.deepcopy(mlp.state_dict())
    for step in range(1, cfg.mlp_steps + 1):
        idx = fit[torch.randint(len(fit), (min(cfg.mlp_batch_size, len(fit)),), generator=gen)]
        loss = nn.functional.mse_loss(mlp(xs[idx]), ys[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == cfg.mlp_steps:
            with torch.no_grad():
                error = float(nn.functional.mse_loss(mlp(xs[held]), ys[held]))
            if error < best_error:
                best_error, best_state = error, copy.deepcopy(mlp.state_dict())
    mlp.load_state_dict(best_state)
    return mlp.eval(), (x_mean, x_std, y_mean, y_std)


@torch.no_grad()
def r_squared(predicted: torch.Tensor, target: torch.Tensor, groups) -> dict[str, float]:
    """Return R² over all columns ("") and per group ``{name: [columns]}`` ("_name")."""
    sse = (predicted - target).pow(2).sum(0)
    sst = (target - target.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    out = {"": float(1 - sse.sum() / sst.sum())}
    for name, columns in groups.items():
        out[f"_{name}"] = float(1 - sse[columns].sum() / sst[columns].sum())
    return out


def regression_r2(train, test, source: str, target: str, cfg, seed, groups) -> dict[str, float]:
    mlp, (x_mean, x_std, y_mean, y_std) = fit_mlp_regressor(
        train[source], train[target].float(), cfg, seed
    )
    with torch.no_grad():
        predicted = mlp((test[source] - x_mean) / x_std) * y_std + y_mean
    return r_squared(predicted, test[target].float(), groups)


def latent_groups(recipe) -> dict[str, list[int]]:
    """Return {transformation: its columns in the latent / relative action}."""
    groups, start = {}, 0
    for name, parts in latent_names(recipe.views, recipe.data.channels):
        groups[name] = list(range(start, start + len(parts)))
        start += len(parts)
    return groups


def run_probe(request: ProbeRequest, recipe) -> dict:
    """Return top-1 per M_val and relative / individual R² (mean over ``--seeds``)."""
    request.refuse_options(
        "--shots",
        "--target",
        "--task",
        "--head",
        "--labels-fraction",
        probe="the seq-JEPA probe",
        why="it reports linear top-1 on aggregated views (--views) and transformation R²",
    )
    cfg: SeqProbeConfig = recipe.probe
    counts = view_counts(request, cfg)
    which = request.which or cfg.which
    if which not in ("target", "context"):
        raise UserError(f"--which must be 'target' or 'context', got '{which}'")
    method, tag = open_method(
        request.run, recipe, request.random_init, "the seq-JEPA probe", request.checkpoint
    )
    encoder = method.encoder(which)
    train_set, test_set, described = labelled_splits(
        recipe,
        request.data,
        request.test,
        cfg.test_fraction,
        cfg.seed,
        labels=request.labels,
        label_option="--labels",
    )
    cache = None if request.random_init else Path(request.run) / "cache"
    weights = f"{tag}-{which}|{described}"
    groups = latent_groups(recipe)
    rows = []
    for seed in range(cfg.seed, cfg.seed + request.seeds):

        def features(dataset, split: str, count: int) -> dict[str, torch.Tensor]:
            where = None if cache is None else cache / hashlib.sha1(weights.encode()).hexdigest()
            split_seed = mix_seed(seed, 0 if split == "train" else 1)
            return sequence_features(method, encoder, dataset, recipe, count, split_seed, where)

        row: dict[str, float] = {}
        classes = len(train_set.classes)
        for count in counts:
            train, test = features(train_set, "train", count), features(test_set, "test", count)
            predicted, _ = linear_probe(
                train["aggregate"],
                train["labels"],
                test["aggregate"],
                test["labels"],
                classes,
                seed,
            )
            row[f"top1_views{count}"] = accuracy(predicted, test["labels"])
        train, test = features(train_set, "train", 2), features(test_set, "test", 2)
        for target, source in (("relative", "pair"), ("individual", "first")):
            r2 = regression_r2(train, test, source, target, cfg, seed, groups)
            row.update({f"{target}_r2{suffix}": value for suffix, value in r2.items()})
        rows.append(row)
    report = {
        "data": described,
        "encoder": f"{tag}-{which}",
        "train_samples": len(train_set),
        "test_samples": len(test_set),
    }
    return {**report, **aggregate(rows)}
