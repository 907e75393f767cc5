"""What an ECG probe runs on: the encoder (trained or random), the labelled data and its splits.

Data: ``--data`` (default: the run's data, else the embedded MIT-BIH sample) gives the
training windows, ``--test`` the test windows. Each uses its own ``train``/``test`` split when
it has one (beats: ``data.train_records``/``data.test_records``; PTB-XL: strat_fold), as the
generic probe does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from jepactl.domains.ecg.encoder import encoder_for_length
from jepactl.domains.ecg.heads import (
    HEADS,
    ECGProbeConfig,
    FinetuneModel,
    attentive_head,
    cached_tokens,
    encode_logits,
    linear_head,
    pooled_features,
    score_logits,
    window_batches,
)
from jepactl.domains.ecg.metrics import average_by_group
from jepactl.domains.ecg.records import open_ecg
from jepactl.domains.ecg.windows import (
    class_counts,
    label_kind,
    labelled_windows,
    split_exists,
    subsample_per_class,
)
from jepactl.errors import UserError
from jepactl.evaluate.attentive_probe import (
    balanced_class_weights,
    classification_loss,
    train_classifier,
)
from jepactl.evaluate.features import default_device
from jepactl.evaluate.seeds import aggregate
from jepactl.evaluate.source import request_encoder
from jepactl.methods.probe_request import ProbeRequest


@dataclass
class ProbeSetup:
    recipe: object
    encoder: nn.Module  # resized to the probe crop, on the evaluation device
    tag: str
    cache_dir: Path | None
    train_source: object
    train_split: str | None
    test_source: object
    test_split: str | None
    kind: str
    heads: list[str]
    described: str
    random_init: bool
    labels_digest: str = ""  # the --labels file's content, for the token cache key

    @classmethod
    def open(cls, request: ProbeRequest, recipe) -> "ProbeSetup":
        from jepactl.data.label_files import label_file_digest
        from jepactl.domains.ecg.windows import with_label_csv

        recipe = with_label_csv(recipe, request.labels)  # --labels: a record,label CSV
        cfg, data_cfg = recipe.probe, recipe.data
        heads = (request.head or ",".join(cfg.heads)).split(",")
        heads = list(HEADS) if heads == ["all"] else [h.strip() for h in heads if h.strip()]
        unknown = [h for h in heads if h not in HEADS]
        if unknown or not heads:
            raise UserError(
                f"--head must be a comma list of {', '.join(HEADS)} or 'all', got '{request.head}'"
            )
        source = request_encoder(request, recipe)
        n = data_cfg.samples(cfg.crop_seconds)
        if n % recipe.model.patch_size:
            raise UserError(
                f"probe.crop_seconds={cfg.crop_seconds} gives {n} samples, not a "
                f"multiple of model.patch_size={recipe.model.patch_size}"
            )
        encoder = encoder_for_length(source.encoder, n).to(default_device()).eval()
        data = request.data or data_cfg.path
        train_source = open_ecg(data, data_cfg)
        kind = label_kind(train_source, data_cfg)
        if kind is None:
            raise UserError(
                f"the data '{train_source.root}' has no labels (.atr beat "
                "annotations, '# Dx:' header codes, ptbxl_database.csv, or a "
                "record,label CSV: --labels FILE.csv)"
            )
        if request.test is not None:
            test_source = open_ecg(request.test, data_cfg)
            train_split = "train" if split_exists(train_source, data_cfg, "train") else None
            test_split = "test" if split_exists(test_source, data_cfg, "test") else None
            described = (
                f"train={train_source.root}:{train_split or 'all'} "
                f"test={test_source.root}:{test_split or 'all'}"
            )
        else:
            if not split_exists(train_source, data_cfg, "test"):
                raise UserError(f"'{train_source.root}' has no test split: pass --test PATH")
            test_source, train_split, test_split = train_source, "train", "test"
            described = f"{train_source.root} train/test splits"
        if request.labels is not None:
            described += f" labels={request.labels}"
        return cls(
            recipe,
            encoder,
            source.tag,
            source.cache_dir,
            train_source,
            train_split,
            test_source,
            test_split,
            kind,
            heads,
            described,
            request.random_init,
            label_file_digest(request.labels),
        )

    @property
    def centre_tokens(self) -> int:
        """Tokens spanning +-0.1 s around a window's centre (the centre beat's QRS and more)."""
        data = self.recipe.data
        return max(2, int(round(0.2 * data.sample_rate / self.recipe.model.patch_size)))

    def datasets(self, seed: int):
        """Return (train, test) windows, capped per class with the seed's draw."""
        cfg, data_cfg = self.recipe.probe, self.recipe.data
        crop, stride = cfg.crop_seconds, cfg.crop_stride_seconds
        train = labelled_windows(self.train_source, data_cfg, self.train_split, crop, stride)
        test = labelled_windows(self.test_source, data_cfg, self.test_split, crop, stride)
        if train.classes != test.classes:
            raise UserError(
                "the training and test data have different label sets "
                f"({len(train.classes)} vs {len(test.classes)} classes)"
            )
        self.full_counts = (
            class_counts(train.group_labels, train.classes),
            class_counts(test.group_labels, test.classes),
        )
        train = subsample_per_class(train, cfg.max_train_per_class, seed)
        test = subsample_per_class(test, cfg.max_test_per_class, seed + 1)
        self.sizes = (len(train), len(test))
        return train, test

    def tokens(self, dataset, which: str) -> torch.Tensor:

        key = (
            f"{self.tag}|{self.described}|{which}|{self.recipe.probe.crop_seconds}"
            f"{self.labels_digest}"
        )
        return cached_tokens(
            self.encoder,
            dataset,
            self.cache_dir,
            key,
            self.recipe.probe,
            self.recipe.train.precision,
        )


def summarise(setup: ProbeSetup, rows: list[dict[str, float]]) -> dict:
    """Return the report: what was probed, on what, and each head's metrics over seeds."""
    train_counts, test_counts = setup.full_counts
    task = {
        "beats": "AAMI beat classes",
        "dx": "header SNOMED codes (multi-label)",
        "ptbxl": f"PTB-XL {setup.recipe.data.ptbxl_task}",
        "csv": "record labels",
    }
    report = {
        "data": setup.described,
        "task": task.get(setup.kind, setup.kind),
        "encoder": "random-init" if setup.random_init else setup.tag,
        "heads": ",".join(setup.heads),
        "crop_seconds": setup.recipe.probe.crop_seconds,
        "train_windows": setup.sizes[0],
        "test_windows": setup.sizes[1],
    }
    if setup.kind == "beats":
        report["train_beats"] = " ".join(f"{k}={v}" for k, v in train_counts.items())
        report["test_beats"] = " ".join(f"{k}={v}" for k, v in test_counts.items())
    elif setup.kind == "csv":  # one label per record: records per class
        report["train_records"] = " ".join(f"{k}={v}" for k, v in train_counts.items())
        report["test_records"] = " ".join(f"{k}={v}" for k, v in test_counts.items())
    report.update(aggregate(rows))
    return report


def run_probe(request: ProbeRequest, recipe) -> dict:
    """Return the probe report for an ECG-JEPA run: per head, the task's metrics (flat dict)."""
    setup = ProbeSetup.open(request, recipe)
    cfg: ECGProbeConfig = recipe.probe
    results: list[dict[str, float]] = []
    for s in range(request.seeds):
        seed = cfg.seed + s
        train_set, test_set = setup.datasets(seed)
        weights = getattr(test_set, "weights", None)
        multilabel = test_set.group_labels.ndim == 2
        classes = train_set.classes
        class_weights = (
            balanced_class_weights(train_set.labels, len(classes))
            if cfg.class_balanced and not multilabel
            else None
        )
        train_tokens = setup.tokens(train_set, f"train{seed}")
        test_tokens = setup.tokens(test_set, f"test{seed}")
        row: dict[str, float] = {}
        for head in setup.heads:
            if head == "linear":
                beats = setup.kind == "beats"
                logits = linear_head(
                    pooled_features(train_tokens, beats, setup.centre_tokens),
                    train_set.labels,
                    pooled_features(test_tokens, beats, setup.centre_tokens),
                    multilabel,
                    classes,
                    class_weights,
                    seed,
                )
            else:
                # The finetune head starts from the trained attentive probe (ECG-JEPA's
                # finetune_after_linear), so both heads train it the same way.
                probe = attentive_head(
                    setup,
                    train_tokens,
                    train_set.labels,
                    len(classes),
                    multilabel,
                    class_weights,
                    seed,
                )
            if head == "attentive":
                with torch.no_grad():
                    logits = torch.cat([probe(chunk.float()) for chunk in test_tokens.split(1024)])
            elif head == "finetune":
                model = FinetuneModel(copy.deepcopy(setup.encoder).requires_grad_(True), probe)
                train_classifier(
                    model,
                    window_batches(train_set, cfg.finetune_batch_size),
                    classification_loss(multilabel, class_weights),
                    cfg.finetune_steps,
                    cfg.finetune_lr,
                    cfg.finetune_weight_decay,
                    warmup_steps=cfg.finetune_warmup_steps,
                    final_lr=cfg.finetune_final_lr,
                    seed=seed,
                    precision=recipe.train.precision,
                )
                logits = encode_logits(model, test_set, cfg, recipe.train.precision)
            grouped = average_by_group(logits.float(), test_set.groups, len(test_set.group_labels))
            _, metrics = score_logits(grouped, test_set.group_labels, multilabel, classes, weights)
            row.update({f"{head}_{k}": v for k, v in metrics.items()})
        results.append(row)
    return summarise(setup, results)
