"""Linear (logistic-regression) and kNN probes on frozen, pooled encoder features.

Probe protocol (the one place it is written down; ``jepactl probe``, the online probe and the
few-shot probe all use these functions):

* **Features:** the frozen encoder's ``pooled`` output (for the ViT: the mean of the final,
  LayerNorm-ed patch tokens, as in I-JEPA's linear evaluation), extracted once and cached.
* **Linear:** multinomial logistic regression, full-batch L-BFGS, on features standardised
  with the training statistics; the L2 strength (1e-5 .. 1e-2) is chosen on a seeded 10 % of
  the training rows, then the head is refitted on all of them.
* **kNN** (DINO's weighted kNN, Caron et al. 2021, with the features centred first):
  features are centred on the training mean, then L2-normalised; each test sample's k = 20
  nearest training samples by cosine similarity vote for their class with weight
  exp(similarity / 0.07). Centring matters when every sample shares one large mean vector
  (benchmarks/images/DIAGNOSIS.md: the mean vector was 99.8 % of the per-sample norm): without
  it every cosine is near 1, the exp-weighted vote degenerates into a plain vote and the
  neighbours are ranked by the shared component instead of what tells samples apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from jepactl.data.label_files import label_file_digest
from jepactl.errors import DataError, UserError
from jepactl.evaluate.features import cached_features
from jepactl.evaluate.metrics import accuracy, balanced_accuracy
from jepactl.evaluate.seeds import aggregate
from jepactl.evaluate.source import labelled_splits, open_recipe, request_encoder
from jepactl.methods.probe_request import ProbeRequest
from jepactl.progress import TaskProgress
from jepactl.recipe import Recipe
from jepactl.registry import method_spec
from jepactl.typed_config import to_dict


def stratified_fraction(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Return indices keeping ``fraction`` of each class (at least one per class), seeded."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        keep.append(idx[: max(1, int(round(len(idx) * fraction)))])
    return torch.cat(keep).sort().values


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    weight_decay: float,
    max_iter: int = 200,
    loss_fn: Callable | None = None,
) -> torch.nn.Linear:
    """Return a multinomial logistic regression fitted by full-batch L-BFGS with L2 penalty.

    ``loss_fn(logits, y)`` replaces the cross-entropy (e.g. class-weighted, or BCE for
    multi-label targets); the L2 penalty is on the weights, not the bias.
    """
    loss_fn = loss_fn or F.cross_entropy
    head = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(
        head.parameters(),
        lr=1.0,
        max_iter=max_iter,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn(head(x), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def standardise_and_hold_out(train_x: torch.Tensor, test_x: torch.Tensor, seed: int):
    """Return (train_x, test_x, validation indices, fitting indices).

    Both feature sets are standardised with the training statistics; a seeded 10% of the
    training rows is held out for choosing the L2 strength.
    """
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    cut = max(1, len(order) // 10)
    return (train_x - mean) / std, (test_x - mean) / std, order[:cut], order[cut:]


def linear_probe(
    train_x, train_y, test_x, test_y, classes: int, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """Return (test predictions, chosen L2 strength): strength picked on a 10% validation split."""
    train_x, test_x, val, fit = standardise_and_hold_out(train_x, test_x, seed)
    best, best_acc = 1e-4, -1.0
    for wd in (1e-5, 1e-4, 1e-3, 1e-2):
        head = fit_logistic(train_x[fit], train_y[fit], classes, wd)
        with torch.no_grad():
            acc = accuracy(head(train_x[val]).argmax(1), train_y[val])
        if acc > best_acc:
            best, best_acc = wd, acc
    head = fit_logistic(train_x, train_y, classes, best)
    with torch.no_grad():
        return head(test_x).argmax(1), best


def knn_predict(
    train_x,
    train_y,
    test_x,
    classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
    centre: bool = True,
) -> torch.Tensor:
    """Return kNN predictions: neighbours by cosine similarity of the features centred on the
    training mean, each voting with weight exp(sim / T) (DINO's vote; protocol above)."""
    mean = train_x.mean(0) if centre else torch.zeros_like(train_x[0])
    train_n = F.normalize(train_x - mean, dim=1)
    preds = []
    for start in range(0, len(test_x), chunk):
        sims = F.normalize(test_x[start : start + chunk] - mean, dim=1) @ train_n.T
        top, idx = sims.topk(min(k, len(train_x)), dim=1)
        votes = torch.zeros(len(top), classes)
        votes.scatter_add_(1, train_y[idx], (top / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def run_probe(request: ProbeRequest) -> dict:
    """Return the probe results; methods with their own protocol provide ``run_probe``."""
    recipe = probe_recipe(request)
    spec = method_spec(recipe.method)
    if request.labels is not None:
        spec.require_label_file()  # methods whose labels never come from a file say what instead
    if spec.run_probe is not None:
        return spec.run_probe(request, recipe)
    return classification_probe(request, recipe)


def probe_recipe(request: ProbeRequest) -> Recipe:
    """Return the run's recipe (or an export's) with ``probe.key=value`` overrides applied."""
    from jepactl.recipe import apply_override, parse_override, recipe_from_dict

    recipe = open_recipe(request.run)
    raw = to_dict(recipe)
    for text in request.overrides:
        path, value = parse_override(text)
        if path[0] not in ("probe", "finetune"):
            raise UserError(f"override '{text}': probe accepts probe.* and finetune.* keys only")
        apply_override(raw, path, value)
    return recipe_from_dict(raw)


def classification_probe(request: ProbeRequest, recipe: Recipe) -> dict:
    """Return linear and kNN accuracy and balanced accuracy on the held-out split.

    With ``--seeds N`` the seeded parts (the ``--labels-fraction`` draw, the split that picks
    the L2 strength) repeat N times on the same cached features.
    """
    data, test = request.data, request.test
    labels_fraction, random_init = request.labels_fraction, request.random_init
    source = request_encoder(request, recipe)
    cfg = recipe.probe
    train_set, test_set, described = labelled_splits(
        source.recipe,
        data,
        test,
        cfg.test_fraction,
        cfg.seed,
        labels=request.labels,
        label_option="--labels",
    )
    # The probe section is in the key: its split seed and test fraction pick which samples a
    # method's own split ("train/test splits") holds, and a method may read its data settings.
    tag = f"{source.tag}|{described}{label_file_digest(request.labels)}|{to_dict(cfg)}"
    train_x, train_y = cached_features(
        source.encoder, train_set, source.cache_dir, tag + "|train", cfg.batch_size
    )
    test_x, test_y = cached_features(
        source.encoder, test_set, source.cache_dir, tag + "|test", cfg.batch_size
    )
    classes = len(train_set.classes)
    rows, train_samples = score_classifiers(
        train_x, train_y, test_x, test_y, classes, cfg, request.seeds, labels_fraction
    )
    report = {
        "data": described,
        "encoder": "random-init" if random_init else source.tag,
        "train_samples": train_samples,
        "test_samples": len(test_y),
    }
    if request.labels is not None:  # what the label file gave: samples per class
        report["train_classes"] = class_counts(train_y, train_set.classes)
        report["test_classes"] = class_counts(test_y, train_set.classes)
    return {**report, **aggregate(rows)}


def score_classifiers(
    train_x, train_y, test_x, test_y, classes: int, cfg, seeds: int, labels_fraction: float = 1.0
) -> tuple[list[dict], int]:
    """Return (one row of linear and kNN scores per seed, training samples used).

    The seeded parts (the ``labels_fraction`` draw, the split that picks the L2 strength)
    repeat for seeds ``cfg.seed`` .. ``cfg.seed + seeds - 1`` on the same features.
    """
    rows, train_samples = [], len(train_y)
    progress = TaskProgress("probe seeds", seeds, min_total=2)
    for seed in range(cfg.seed, cfg.seed + seeds):
        fit_x, fit_y = train_x, train_y
        if labels_fraction < 1.0:
            keep = stratified_fraction(train_y, labels_fraction, seed)
            fit_x, fit_y, train_samples = train_x[keep], train_y[keep], len(keep)
        linear_pred, strength = linear_probe(fit_x, fit_y, test_x, test_y, classes, seed)
        knn_pred = knn_predict(fit_x, fit_y, test_x, classes, cfg.knn_k, cfg.knn_temperature)
        rows.append(
            {
                "linear_accuracy": accuracy(linear_pred, test_y),
                "linear_balanced_accuracy": balanced_accuracy(linear_pred, test_y),
                "linear_l2": strength,
                "knn_accuracy": accuracy(knn_pred, test_y),
                "knn_balanced_accuracy": balanced_accuracy(knn_pred, test_y),
            }
        )
        progress.advance()
    progress.close()
    return rows, train_samples


def class_counts(labels: torch.Tensor, classes: list[str]) -> str:
    """Return ``"name=count ..."`` for every class (0 for a class with no sample)."""
    counts = torch.bincount(labels.long().flatten(), minlength=len(classes)).tolist()
    return " ".join(f"{name}={count}" for name, count in zip(classes, counts))


def run_feature_probe(request: ProbeRequest, features: str, test_features: str | None) -> dict:
    """Return linear and kNN scores, as ``classification_probe`` reports them, on embeddings
    ``jepactl embed`` wrote (a .parquet file, a parquet data set folder, or a .npy with its
    .index.csv), so a cluster embeds once and probes without recomputing anything.

    Labels come from the rows' ``class`` column, numbered by the data set's classes that embed
    recorded, or from ``--labels FILE.csv`` matched on the ``id`` column. Without
    ``test_features`` the seeded ``probe.test_fraction`` split of the rows is the one
    ``jepactl probe --data`` draws, so both probes score the same samples.
    """
    request.refuse_options(
        "--data",
        "--test",
        "--shots",
        "--target",
        "--task",
        "--head",
        "--which",
        "--views",
        "--rollouts",
        "--checkpoint",
        probe="probe --features",
        why="the features were computed by `jepactl embed`, which took those choices",
    )
    if request.random_init:
        raise UserError("--random-init does not apply to --features: embed a random-init export")
    recipe = probe_recipe(request)
    cfg = recipe.probe
    label_kind = None
    if request.labels is not None:
        label_kind = method_spec(recipe.method).require_label_file()
    train = labelled_embeddings(features, request.labels, label_kind)
    described = f"features={features}"
    if test_features is not None:
        test = labelled_embeddings(test_features, request.labels, label_kind, train.classes)
        described += f" test_features={test_features}"
        made_by = [_made_by(rows.metadata) for rows in (train, test)]
        if any(a is not None and b is not None and a != b for a, b in zip(*made_by)):
            raise UserError(
                f"--features and --test-features come from different encoders ({made_by[0][1]} "
                f"of {made_by[0][0]} and {made_by[1][1]} of {made_by[1][0]}): embed both with "
                "the same one"
            )
        train_x, train_y, test_x, test_y = train.x, train.y, test.x, test.y
    else:  # the split labelled_splits draws for data without a test split
        order = torch.randperm(len(train.y), generator=torch.Generator().manual_seed(cfg.seed))
        cut = int(round(len(train.y) * (1 - cfg.test_fraction)))
        train_x, train_y = train.x[order[:cut]], train.y[order[:cut]]
        test_x, test_y = train.x[order[cut:]], train.y[order[cut:]]
        described += (
            f" seeded {1 - cfg.test_fraction:.0%}/{cfg.test_fraction:.0%} split (seed {cfg.seed})"
        )
    if request.labels is not None:
        described += f" labels={request.labels}"
    _warn_if_other_run(train.metadata, request.run)
    rows, train_samples = score_classifiers(
        train_x,
        train_y,
        test_x,
        test_y,
        len(train.classes),
        cfg,
        request.seeds,
        request.labels_fraction,
    )
    report = {
        "data": described,
        "encoder": train.metadata.get("encoder", "unknown"),
        "train_samples": train_samples,
        "test_samples": len(test_y),
    }
    if request.labels is not None:
        report["train_classes"] = class_counts(train_y, train.classes)
        report["test_classes"] = class_counts(test_y, train.classes)
    return {**report, **aggregate(rows)}


@dataclass
class LabelledEmbeddings:
    x: torch.Tensor  # (N, D) float32, input order
    y: torch.Tensor  # (N,) class numbers into ``classes``
    classes: list[str]
    metadata: dict


def labelled_embeddings(
    path: str,
    labels: str | None = None,
    label_kind: str | None = None,
    classes: list[str] | None = None,
) -> LabelledEmbeddings:
    """Read ``embed``'s rows at ``path`` with one class per row: from ``labels`` (a label CSV
    of ``label_kind`` rows, e.g. ``file,label``, keyed by the ``id`` column; unlisted rows are
    left out) or from the ``class`` column, numbered by ``classes`` (the training features'),
    else by the data set's classes embed recorded, else by the sorted names."""
    from jepactl.evaluate.embedding_files import read_embeddings

    rows = read_embeddings(path)
    meta = rows.metadata
    if labels is not None:
        keep, numbers, names = _label_file_rows(rows, labels, label_kind, path)
        x = torch.from_numpy(rows.features[keep])
        return LabelledEmbeddings(x, torch.from_numpy(numbers), names, meta)
    if rows.labels.ndim != 1:
        raise DataError(
            f"features '{path}' have multi-label rows: the linear and kNN probe on features "
            "takes one class per row"
        )
    if any(name == "" for name in rows.class_names):
        raise DataError(
            f"features '{path}' have rows without a class (the embedded data had no labels): "
            "pass --labels FILE.csv keyed by the id column"
        )
    classes = classes or list(meta.get("classes") or []) or sorted(set(rows.class_names))
    number = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(rows.class_names) - set(number))
    if unknown:
        raise DataError(
            f"features '{path}' have class '{unknown[0]}', which the training features lack"
        )
    y = torch.tensor([number[name] for name in rows.class_names], dtype=torch.int64)
    return LabelledEmbeddings(torch.from_numpy(rows.features), y, classes, meta)


def _label_file_rows(rows, labels: str, kind: str, where: str):
    """Return (kept row positions, class numbers, classes) for rows whose ``id`` the label
    file lists: as a path relative to the embedded data folder, absolute, or a bare name."""
    from jepactl.data.label_files import match_files, read_label_file

    data = rows.metadata.get("data")
    base = Path(data) if data else None
    table = read_label_file(labels, kind.split(",")[0], base)
    roots = [] if base is None else [base]
    if base is not None and rows.metadata.get("split"):
        roots.append(base / rows.metadata["split"])
    keep, numbers, classes = match_files(table, [Path(i) for i in rows.ids], roots, where)
    return np.asarray(keep, dtype=np.int64), numbers, classes


def _made_by(metadata: dict) -> tuple[str | None, str | None]:
    """(the run folder, resolved; the encoder tag) that embed recorded, None where unknown."""
    run = metadata.get("run")
    return (str(Path(run).resolve()) if run else None, metadata.get("encoder"))


def _warn_if_other_run(metadata: dict, run) -> None:
    """A warning line when the features say another run folder made them (the probe settings
    then come from ``run``, the weights from the other)."""
    import logging

    made_by = _made_by(metadata)[0]
    if made_by and made_by != str(Path(run).resolve()):
        logging.getLogger("jepactl").warning(
            "the features were embedded from '%s', not '%s': the probe settings are %s's",
            metadata["run"],
            run,
            run,
        )
