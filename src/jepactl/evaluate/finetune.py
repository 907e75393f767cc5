"""``jepactl finetune``: encoder + linear head trained end to end on labelled data.

AdamW with layer-wise lr decay (BEiT/MAE protocol: the head and last block get the full lr,
each earlier block ``layer_decay`` times less), linear warmup then cosine per step, label
smoothing, random-resized-crop + flip augmentation. Classification trains cross-entropy and
reports accuracy; a regression target (tabular data whose labels are the standardised target)
trains a one-output head with MSE and reports RMSE, in the standardised units T-JEPA's paper
uses and in the target's own units, and R^2. Writes its own folder with metrics, the
fine-tuned encoder as a regular export (``load_encoder`` works on it) and the head.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from jepactl.errors import UserError
from jepactl.evaluate.features import default_device
from jepactl.evaluate.metrics import accuracy, balanced_accuracy
from jepactl.evaluate.source import labelled_splits, open_encoder, open_recipe
from jepactl.export import FORMAT, clean_state_dict, module_config
from jepactl.output_paths import StagedFiles, check_writable_folder, write_errors_name
from jepactl.precision import autocast as autocast_for
from jepactl.progress import TrainProgress
from jepactl.recipe import apply_override, parse_override, recipe_from_dict, to_dict
from jepactl.schedules import cosine


class FinetuneModel(nn.Module):
    """Pooled encoder features -> LayerNorm-free linear head (class logits or one value)."""

    def __init__(self, encoder: nn.Module, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.embed_dim, outputs)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.pooled(x))


def layer_decay_groups(
    model: FinetuneModel, lr: float, weight_decay: float, decay: float
) -> list[dict]:
    """Return AdamW groups where block i of L gets lr * decay**(L + 1 - (i + 1))."""
    depth = len(model.encoder.blocks)

    def layer_of(name: str) -> int:
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith("encoder.tokenizer") or name.startswith("encoder.registers"):
            return 0
        return depth + 1

    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        no_wd = param.ndim <= 1 or name.endswith(".bias") or "registers" in name
        key = (layer_of(name), no_wd)
        scale = decay ** (depth + 1 - key[0])
        group = groups.setdefault(
            key, {"params": [], "lr_scale": scale, "weight_decay": 0.0 if no_wd else weight_decay}
        )
        group["params"].append(param)
    for group in groups.values():
        group["lr"] = lr * group["lr_scale"]
    return list(groups.values())


def loader_workers(dataset) -> int:
    """Worker processes for ``dataset``: none for tables already held as one tensor."""
    from jepactl.micro_batch import loader_workers as capped

    return 0 if getattr(dataset, "in_memory", False) else capped(2)


@torch.no_grad()
def predict(
    model: nn.Module, dataset, batch_size: int, autocast, regression: bool
) -> tuple[torch.Tensor, ...]:
    """Return (predictions, labels): class indices, or values for a regression head."""
    device = next(model.parameters()).device
    model.eval()
    preds, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=loader_workers(dataset)):
        with autocast:
            out = model(x.to(device)).float()
        preds.append((out[:, 0] if regression else out.argmax(1)).cpu())
        labels.append(torch.as_tensor(y))
    model.train()
    return torch.cat(preds), torch.cat(labels)


def loss_of(out: torch.Tensor, y: torch.Tensor, regression: bool, smoothing: float) -> torch.Tensor:
    if regression:  # labels are the standardised target, so MSE is on a unit scale
        return F.mse_loss(out.float()[:, 0], y.float())
    return F.cross_entropy(out.float(), y, label_smoothing=smoothing)


def test_scores(
    pred: torch.Tensor, labels: torch.Tensor, regression: bool, target_std: float
) -> dict[str, float]:
    if not regression:
        return {
            "test_accuracy": accuracy(pred, labels),
            "test_balanced_accuracy": balanced_accuracy(pred, labels),
        }
    labels = labels.float()
    mse = float((pred - labels).pow(2).mean())
    return {
        "test_rmse": math.sqrt(mse),
        "test_rmse_original": math.sqrt(mse) * target_std,
        "test_r2": 1.0 - mse / max(float(labels.var(unbiased=False)), 1e-12),
    }


def run_finetune(
    run: Path,
    overrides: list[str],
    data: str | None,
    test: str | None,
    out: Path | None,
    random_init: bool = False,
    quiet: bool = False,
    target: str | None = None,
    checkpoint: str = "last",
) -> dict:
    """Fine-tune the run's encoder with a linear head; return held-out metrics.

    ``target`` names the label column of tabular data when the run was pretrained without
    ``data.target``. ``checkpoint``: the run's "last", "best" or a step number as text.
    """
    raw = to_dict(open_recipe(run))
    for text in overrides:
        path, value = parse_override(text)
        if path[0] != "finetune":
            raise UserError(f"override '{text}': finetune accepts finetune.* keys only")
        apply_override(raw, path, value)
    if target is not None:
        if "target" not in raw.get("data", {}):
            raise UserError(
                f"--target: recipe method '{raw.get('method')}' has no target "
                "column (it applies to tabular data)"
            )
        raw["data"]["target"] = target
    recipe = recipe_from_dict(raw)
    cfg = recipe.finetune
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UserError("finetune.epochs and finetune.batch_size must be positive")
    out = out or run / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable_folder(out, "--out")  # before training, not after it
    torch.manual_seed(cfg.seed)
    source = open_encoder(
        run, cfg.which, random_init, seed=cfg.seed, recipe=recipe, checkpoint=checkpoint
    )
    train_set, test_set, described = labelled_splits(
        recipe, data, test, recipe.probe.test_fraction, cfg.seed, augment_train=True
    )
    device = default_device()
    regression = getattr(train_set, "task", "classification") == "regression"
    target_std = float(getattr(train_set, "target_std", 1.0))
    outputs = 1 if regression else len(train_set.classes)
    # The target encoder comes frozen (it is an EMA copy): fine-tuning trains all of it.
    model = FinetuneModel(source.encoder.train().requires_grad_(True), outputs).to(device)
    optimizer = torch.optim.AdamW(
        layer_decay_groups(model, cfg.lr, cfg.weight_decay, cfg.layer_decay), lr=cfg.lr
    )
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=loader_workers(train_set),
        generator=loader_gen,
        persistent_workers=False,
    )
    per_epoch = len(loader)
    if per_epoch == 0:
        raise UserError(
            f"fewer training samples ({len(train_set)}) than one batch "
            f"({cfg.batch_size}); lower finetune.batch_size"
        )
    total, warmup = cfg.epochs * per_epoch, int(cfg.warmup_epochs * per_epoch)
    autocast = autocast_for(device, recipe.train.precision)

    with write_errors_name(out / "metrics.jsonl"):
        out.mkdir(parents=True, exist_ok=True)
        metrics = (out / "metrics.jsonl").open("w")
    progress = TrainProgress(total, 0, quiet, title="finetune")
    step, started = 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        train_set.epoch = epoch
        for x, y in loader:
            if step < warmup:
                factor = (step + 1) / max(1, warmup)
            else:
                factor = cosine(
                    (step - warmup) / max(1, total - warmup), 1.0, cfg.final_lr / cfg.lr
                )
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor * group["lr_scale"]
            with autocast:
                logits = model(x.to(device))
            loss = loss_of(logits, torch.as_tensor(y).to(device), regression, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            progress.advance(step)
        pred, labels = predict(model, test_set, cfg.batch_size, autocast, regression)
        scores = test_scores(pred, labels, regression, target_std)
        record = {
            "epoch": epoch + 1,
            "step": step,
            "loss": loss.item(),
            "lr": cfg.lr * factor,
            **scores,
            "samples_per_s": step * cfg.batch_size / (time.perf_counter() - started),
        }
        with write_errors_name(out / "metrics.jsonl"):
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
        progress.log(step, record)
    progress.close()
    metrics.close()

    encoder = model.encoder.eval()
    config = {
        "format": FORMAT,
        "which": f"finetuned-{cfg.which}",
        **module_config(encoder, encoder),
        **(
            {
                "task": "regression",
                "target_mean": float(train_set.target_mean),
                "target_std": target_std,
            }
            if regression
            else {"classes": list(train_set.classes)}
        ),
        "finetune": asdict(cfg),
        "data": described,
        "recipe": to_dict(recipe),
    }
    with StagedFiles() as stage:  # all three or none: never weights without their config
        save_file(
            clean_state_dict(encoder.state_dict()), str(stage.path(out / "model.safetensors"))
        )
        save_file(
            clean_state_dict(model.head.state_dict()), str(stage.path(out / "head.safetensors"))
        )
        stage.path(out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {
        "data": described,
        "out": str(out),
        "epochs": cfg.epochs,
        "encoder": "random-init" if random_init else source.tag,
        "task": "regression" if regression else "classification",
        **scores,
    }
