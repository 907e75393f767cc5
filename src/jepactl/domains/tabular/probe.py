"""Tabular downstream protocol: linear and MLP heads on T-JEPA embeddings vs raw features.

T-JEPA's evaluation (methods.md §9): freeze the encoder, embed the tables, train the same
downstream models on the embeddings and on the raw (preprocessed) features, and compare:
accuracy and ROC AUC for classification, RMSE of the standardised target for regression.
``--seeds N`` repeats every head with N seeds (head init, batch order, validation split) and
reports mean and std. The embeddings are computed once; only the heads depend on the seed.

A target column that was a pretraining feature (no ``data.target`` at pretraining) is hidden
from the encoder by leaving its tokens out of the visible set, which is how the context
encoder saw feature subsets during pretraining, and dropped from the raw features too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.data.tables import Table, has_split, read_table
from jepactl.domains.tabular.preprocess import TablePreprocessor, TargetCoding
from jepactl.errors import UserError
from jepactl.evaluate.probe import fit_logistic
from jepactl.evaluate.seeds import aggregate
from jepactl.evaluate.source import request_encoder
from jepactl.methods.probe_request import ProbeRequest
from jepactl.progress import TaskProgress

HEADS = ("linear", "mlp")


# ------------------------------------------------------------------------------ metrics


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the ROC AUC of ``scores`` for binary ``labels`` (Mann-Whitney U, ties halved)."""
    labels = labels.bool()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = scores.double().argsort()
    ranks = torch.empty_like(order, dtype=torch.float64)
    sorted_scores = scores.double()[order]
    # Average ranks over ties so equal scores count one half.
    unique, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def classification_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Return accuracy and ROC AUC (binary; macro one-vs-rest for more classes)."""
    probs = logits.float().softmax(dim=1)
    accuracy = float((probs.argmax(1) == labels).float().mean())
    if probs.shape[1] == 2:
        auc = roc_auc(probs[:, 1], labels == 1)
    else:
        aucs = [roc_auc(probs[:, c], labels == c) for c in range(probs.shape[1])]
        aucs = [a for a in aucs if not math.isnan(a)]
        auc = sum(aucs) / len(aucs) if aucs else float("nan")
    return {"accuracy": accuracy, "roc_auc": auc}


def regression_scores(pred: torch.Tensor, target: torch.Tensor, scale: float) -> dict[str, float]:
    """Return RMSE of the standardised target (the paper's metric) and in the target's units."""
    rmse = float((pred.float().flatten() - target.float()).pow(2).mean().sqrt())
    return {"rmse": rmse, "rmse_units": rmse * scale}


# ------------------------------------------------------------------------------ inputs


@torch.no_grad()
def embed_rows(
    encoder: nn.Module,
    features: torch.Tensor,
    visible: list[int],
    mode: str,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Return frozen embeddings (N, E): flattened visible feature tokens, or their mean."""
    encoder = encoder.eval()
    keep = torch.as_tensor(visible, dtype=torch.long)
    out = []
    for start in range(0, len(features), batch_size):
        x = features[start : start + batch_size]
        tokens = encoder(x, keep.expand(len(x), -1)).float()
        out.append(tokens.flatten(1) if mode == "tokens" else tokens.mean(dim=1))
    return torch.cat(out)


def raw_inputs(pre: TablePreprocessor, features: torch.Tensor, visible: list[int]) -> torch.Tensor:
    """Return the raw-feature baseline input: real-valued tokens and one-hot categoricals."""
    widths = [1] * pre.n_numeric + pre.cardinalities
    columns = torch.cat([torch.full((w,), i in visible) for i, w in enumerate(widths)])
    return pre.one_hot(features)[:, columns]


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


# ------------------------------------------------------------------------------ heads


@dataclass
class HeadData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def _validation_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(n * fraction))
    return order[cut:], order[:cut]


def _out_dim(coding: TargetCoding) -> int:
    return len(coding.classes) if coding.task == "classification" else 1


def _loss(pred: torch.Tensor, y: torch.Tensor, coding: TargetCoding) -> torch.Tensor:
    if coding.task == "classification":
        return F.cross_entropy(pred, y)
    return F.mse_loss(pred.flatten(), y)


def fit_linear(
    data: HeadData, coding: TargetCoding, val_fraction: float, seed: int
) -> torch.Tensor:
    """Return test predictions of a linear model whose L2 strength is picked on validation."""
    fit, val = _validation_split(len(data.train_x), val_fraction, seed)
    x, y = data.train_x, data.train_y

    def train(rows: torch.Tensor, strength: float):
        if coding.task == "classification":
            return fit_logistic(x[rows], y[rows], _out_dim(coding), strength)
        # Ridge regression in closed form (bias unpenalised through centring).
        xs, ys = x[rows].double(), y[rows].double()
        mx, my = xs.mean(0), ys.mean()
        xc = xs - mx
        gram = xc.T @ xc + strength * len(rows) * torch.eye(xs.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(gram, xc.T @ (ys - my))
        return lambda z: ((z.double() - mx) @ w + my).float()[:, None]

    best, best_loss = None, math.inf
    for strength in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        model = train(fit, strength)
        with torch.no_grad():
            loss = float(_loss(model(x[val]), y[val], coding))
        if loss < best_loss:
            best, best_loss = strength, loss
    model = train(torch.arange(len(x)), best)
    with torch.no_grad():
        return model(data.test_x)


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int, dropout: float) -> nn.Module:
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, out_dim))


def fit_mlp(data: HeadData, coding: TargetCoding, cfg, seed: int) -> torch.Tensor:
    """Return test predictions of an MLP trained with AdamW and early stopping on validation."""
    torch.manual_seed(seed)
    fit, val = _validation_split(len(data.train_x), cfg.val_fraction, seed)
    model = mlp(
        data.train_x.shape[1], _out_dim(coding), cfg.mlp_hidden, cfg.mlp_layers, cfg.mlp_dropout
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.mlp_lr, weight_decay=cfg.mlp_weight_decay)
    x, y = data.train_x, data.train_y
    gen = torch.Generator().manual_seed(seed)
    best_state, best_loss, waited = copy.deepcopy(model.state_dict()), math.inf, 0
    for _ in range(cfg.mlp_max_epochs):
        model.train()
        for rows in fit[torch.randperm(len(fit), generator=gen)].split(cfg.mlp_batch_size):
            opt.zero_grad(set_to_none=True)
            _loss(model(x[rows]), y[rows], coding).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            loss = float(_loss(model(x[val]), y[val], coding))
        if loss < best_loss - 1e-6:
            best_state, best_loss, waited = copy.deepcopy(model.state_dict()), loss, 0
        else:
            waited += 1
            if waited >= cfg.mlp_patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        return model(data.test_x)


def score(pred: torch.Tensor, labels: torch.Tensor, coding: TargetCoding) -> dict[str, float]:
    if coding.task == "classification":
        return classification_scores(pred, labels)
    return regression_scores(pred, labels, coding.std)


# ------------------------------------------------------------------------------ protocol


def _split_rows(table: Table, fraction: float, seed: int) -> tuple[Table, Table]:
    order = torch.randperm(len(table.frame), generator=torch.Generator().manual_seed(seed))
    cut = int(round(len(order) * (1 - fraction)))
    pick = lambda rows: Table(table.name, table.frame.iloc[rows.tolist()].reset_index(drop=True))  # noqa: E731
    return pick(order[:cut]), pick(order[cut:])


def load_splits(request: ProbeRequest, recipe) -> tuple[Table, Table, str]:
    """Return (train table, test table, description) following --data/--test or a split."""
    cfg = recipe.probe
    data = request.data or recipe.data.path
    if data is None:
        raise UserError("no labelled data: pass --data PATH")
    train = read_table(data, recipe.data, "train")
    if request.test is not None:
        test = read_table(
            request.test, recipe.data, "test" if has_split(request.test, "test") else None
        )
        return train, test, f"train={data} test={request.test}"
    if has_split(data, "test"):
        return train, read_table(data, recipe.data, "test"), f"{data} train/test splits"
    train, test = _split_rows(train, cfg.test_fraction, cfg.seed)
    return (
        train,
        test,
        (
            f"{data} seeded {1 - cfg.test_fraction:.0%}/{cfg.test_fraction:.0%} "
            f"split (seed {cfg.seed})"
        ),
    )


def tabular_probe(request: ProbeRequest, recipe) -> dict:
    """Return side-by-side head metrics on raw features and on T-JEPA embeddings."""
    cfg = recipe.probe
    target = request.target or recipe.data.target
    if not target:
        raise UserError(
            "no target column: pass --target COLUMN (or set data.target at pretraining)"
        )
    heads = HEADS if request.head in (None, "all") else (request.head,)
    if any(h not in HEADS for h in heads):
        raise UserError(
            f"--head must be linear, mlp or all for tabular probes, got '{request.head}'"
        )
    if request.task not in (None, "classification", "regression"):
        raise UserError(f"--task must be classification or regression, got '{request.task}'")
    source = request_encoder(request, recipe)
    pre = TablePreprocessor(source.recipe.data.fitted)
    train_table, test_table, described = load_splits(request, recipe)
    coding = TargetCoding.fit(train_table, target, request.task)
    train_y, train_keep = coding.encode(train_table, target)
    test_y, test_keep = coding.encode(test_table, target)
    train_f = pre.transform(train_table)[train_keep]
    test_f = pre.transform(test_table)[test_keep]

    hidden = pre.tokens_of(target)
    visible = [i for i in range(pre.num_features) if i not in hidden]
    inputs = {
        "raw": standardise(raw_inputs(pre, train_f, visible), raw_inputs(pre, test_f, visible)),
        "tjepa": standardise(
            embed_rows(source.encoder, train_f, visible, cfg.embedding, cfg.batch_size),
            embed_rows(source.encoder, test_f, visible, cfg.embedding, cfg.batch_size),
        ),
    }
    rows: list[dict[str, float]] = []
    fits = request.seeds * len(heads) * len(inputs)
    with TaskProgress("probe heads", fits, min_total=2) as progress:
        for offset in range(request.seeds):
            seed = cfg.seed + offset
            row: dict[str, float] = {}
            for head in heads:
                for name, (train_x, test_x) in inputs.items():
                    data = HeadData(train_x, train_y, test_x, test_y)
                    pred = (
                        fit_linear(data, coding, cfg.val_fraction, seed)
                        if head == "linear"
                        else fit_mlp(data, coding, cfg, seed)
                    )
                    for metric, value in score(pred, test_y, coding).items():
                        row[f"{head}_{metric}_{name}"] = value
                    progress.advance()
            rows.append(row)

    out: dict = {
        "data": described,
        "target": target,
        "task": coding.task,
        "encoder": "random-init" if request.random_init else source.tag,
        "embedding": f"{cfg.embedding} ({inputs['tjepa'][0].shape[1]} dims)",
        "raw_dims": inputs["raw"][0].shape[1],
        "train_samples": len(train_y),
        "test_samples": len(test_y),
        "seeds": request.seeds,
    }
    if hidden:
        out["note"] = (
            f"'{target}' was a pretraining feature; its token is hidden from the "
            "encoder (set data.target when pretraining)"
        )
    out.update(aggregate(rows))
    return out
