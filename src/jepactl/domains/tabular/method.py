"""T-JEPA: predict the EMA target encoder's tokens of held-out features from a feature subset.

Reference: Thimonier, De Melo Costa, Popineau, Rimmel, Doan, "T-JEPA: augmentation-free
self-supervised learning for tabular data" (ICLR 2025, arXiv 2410.05016), code
jose-melo/t-jepa; defaults in methods.md §9. Tables are read by ``data/tables.py``, turned into
feature tensors by ``domains/tabular/preprocess.py`` (statistics fitted on the pretraining data),
tokenised one token per feature (``nn/feature_tokenizer.py``) and masked into feature subsets
(``masks/feature_subsets.py``). The [REG] tokens are the shared encoder's registers
(``model.num_registers``): always present, never predicted.

Deviations, recorded in the recipes: the shared encoder is pre-LN timm blocks with a final
LayerNorm (the paper's is post-LN, ReLU, dropout 0.002), and the fitted preprocessing is stored
in the run's recipe (``data.fitted``) so that the checkpoint, the export and every evaluation
apply the same statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch.utils.data import Dataset

from jepactl.data.sampling import SampleKey
from jepactl.data.tables import (
    TableDataConfig,
    column_roles,
    read_table,
)
from jepactl.data.tables import (
    has_split as table_has_split,
)
from jepactl.domains.tabular.preprocess import TablePreprocessor, TargetCoding
from jepactl.errors import DataError, RecipeError, UserError
from jepactl.masks import FeatureMaskConfig, FeatureSubsetMask, MaskingCollate
from jepactl.methods.base import (
    ContextTargetPredictor,
    MethodSpec,
    PredictorConfig,
    PretrainData,
)
from jepactl.nn.vit import EncoderConfig
from jepactl.recipe import EmaConfig, LossConfig, OptimConfig, ProbeConfig, Recipe, TrainConfig


@dataclass
class TabularEncoderConfig(EncoderConfig):
    """T-JEPA's encoder sizes (methods.md §9: D 64, 16 layers, 2 heads, FFN 64)."""

    embed_dim: int = 64
    depth: int = 16
    num_heads: int = 2
    mlp_ratio: float = 1.0  # FFN width 64 = 1 x D
    patch_size: int = 1  # unused by the feature tokenizer
    num_registers: int = 1  # the paper's [REG] tokens (n_cls_tokens); 0 is the ablation
    norm_eps: float = 1e-5


@dataclass
class TabularPredictorConfig(PredictorConfig):
    embed_dim: int = 16  # pred_embed_dim
    depth: int = 16  # pred_num_layers
    num_heads: int = 4
    mlp_ratio: float | None = 4.0


@dataclass
class TabularProbeConfig(ProbeConfig):
    """Downstream heads on frozen embeddings vs raw features (domains/tabular/probe.py)."""

    # tokens: the flattened feature-token matrix (the paper's *_embedded datasets);
    # pooled: the mean feature token (encoder.pooled, what `jepactl embed` writes).
    embedding: Literal["tokens", "pooled"] = "tokens"
    val_fraction: float = 0.1  # held out of the training data for early stopping / L2 choice
    mlp_hidden: int = 256
    mlp_layers: int = 2
    mlp_dropout: float = 0.1
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 1e-5
    mlp_batch_size: int = 256
    mlp_max_epochs: int = 100
    mlp_patience: int = 8  # epochs without validation improvement before stopping


@dataclass
class TJEPARecipe(Recipe):
    domain: str = "tabular"
    method: str = "tjepa"
    data: TableDataConfig = field(default_factory=TableDataConfig)
    model: TabularEncoderConfig = field(default_factory=TabularEncoderConfig)
    predictor: TabularPredictorConfig = field(default_factory=TabularPredictorConfig)
    mask: FeatureMaskConfig = field(default_factory=FeatureMaskConfig)
    # jannis: lr 3.66e-4, start/final lr 0, warmup 10 epochs, wd 0 (methods.md §9).
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=3.66e-4,
            start_lr=0.0,
            final_lr=0.0,
            warmup_steps=630,
            weight_decay=0.0,
            final_weight_decay=0.0,
        )
    )
    ema: EmaConfig = field(default_factory=lambda: EmaConfig(start=0.996, end=1.0))
    # nn.MSELoss on the raw target-encoder tokens, no LayerNorm on the targets.
    loss: LossConfig = field(default_factory=lambda: LossConfig(kind="mse", target_norm="none"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=512, max_steps=18900))
    probe: TabularProbeConfig = field(default_factory=TabularProbeConfig)


def preprocessor(recipe: TJEPARecipe) -> TablePreprocessor:
    """Return the preprocessing fitted by pretraining (stored in ``data.fitted``)."""
    if not recipe.data.fitted:
        raise RecipeError(
            "recipe key 'data.fitted' is empty: the tabular encoder needs the "
            "preprocessing fitted by `jepactl pretrain` (use a run folder)"
        )
    return TablePreprocessor(recipe.data.fitted)


def tokenizer_config(recipe: TJEPARecipe) -> dict:
    pre = preprocessor(recipe)
    return {
        "kind": "features",
        "n_numeric": pre.n_numeric,
        "cardinalities": pre.cardinalities,
        "token_names": pre.token_names,
        "preprocessing": pre.to_dict(),
    }


class TJEPA(ContextTargetPredictor):
    def __init__(self, recipe: TJEPARecipe) -> None:
        super().__init__(
            tokenizer_config(recipe),
            recipe.model,
            recipe.predictor,
            inputs="features",
            loss=recipe.loss,
        )


def build(recipe: TJEPARecipe) -> TJEPA:
    return TJEPA(recipe)


# ------------------------------------------------------------------------------ data


class TablePretrainDataset(Dataset):
    """Item ``(index, sample_seed, batch_seed)`` -> {"features": (F,), "batch_seed": int}."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, key: SampleKey) -> dict:
        index, _, batch_seed = key  # no augmentation: T-JEPA is augmentation-free
        return {"features": self.features[index], "batch_seed": batch_seed}


def masking_collate(recipe: TJEPARecipe, num_features: int) -> MaskingCollate:
    """Return the collate that stacks rows and draws feature-subset masks."""
    return MaskingCollate("features", FeatureSubsetMask(num_features, recipe.mask))


@dataclass
class TableSource:
    name: str
    skipped: list[str] = field(default_factory=list)


def pretrain_data(recipe: TJEPARecipe, path: str | None):
    """Return (dataset indexed by SampleKey, collate, source); fits ``data.fitted`` if empty.

    Fitting here (before the trainer writes recipe.yaml and builds the model) is what stores
    the statistics in the run; a resumed run reads them back instead of refitting.
    """
    if path is None:
        raise UserError("no data: pass --data PATH (a CSV or parquet file)")
    table = read_table(path, recipe.data, "train")
    if recipe.data.fitted is None:
        roles = column_roles(table, recipe.data)
        fitted = TablePreprocessor.fit(
            table, roles, recipe.data.numeric_transform, recipe.data.quantiles
        ).to_dict()
        if recipe.data.target is not None:
            # Kept so every later file maps labels to the same class indices / scale.
            fitted["target"] = {
                "name": recipe.data.target,
                **asdict(TargetCoding.fit(table, recipe.data.target)),
            }
        recipe.data.fitted = fitted
    pre = preprocessor(recipe)
    if pre.num_features < 2:
        raise DataError(
            f"table '{table.name}' has {pre.num_features} feature column(s); "
            "T-JEPA masks feature subsets and needs at least 2"
        )
    features = pre.transform(table)
    return PretrainData(
        TablePretrainDataset(features),
        masking_collate(recipe, pre.num_features),
        TableSource(table.name),
    )


class TabularEvalDataset(Dataset):
    """Item ``i`` -> (preprocessed features (F,), label), with ``.labels`` and ``.classes``.

    ``task`` is "regression" when the labels are the standardised target (``classes`` is then
    empty and ``target_std`` turns an RMSE back into the target's own units).
    """

    in_memory = True  # rows are one tensor: loader worker processes would only add overhead

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        task: str = "classification",
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        self.features, self.labels, self.classes = features, labels, classes
        self.task, self.target_mean, self.target_std = task, target_mean, target_std

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int):
        return self.features[index], self.labels[index]


def eval_data(
    recipe: TJEPARecipe, path: str, split: str | None, augment: bool = False, seed: int = 0
) -> TabularEvalDataset:
    """Return the table's rows preprocessed with the fitted statistics and its labels.

    Labels come from ``data.target`` (class indices, or the standardised value for a
    regression target), coded as fitted at pretraining when it stored the target; without a
    target column every label is -1 and ``classes`` is empty.
    """
    table = read_table(path, recipe.data, split)
    pre = preprocessor(recipe)
    features = pre.transform(table)
    target = recipe.data.target
    if target is None or target not in table.frame.columns:
        return TabularEvalDataset(features, torch.full((len(features),), -1), [])
    if pre.tokens_of(target):
        # The encoder would read the answer from its own input. (`probe` hides the token
        # instead; fine-tuning trains every token, so it needs a run pretrained without it.)
        raise RecipeError(
            f"data.target '{target}' was an input feature at pretraining; "
            f"pretrain with data.target={target} to fine-tune on it"
        )
    stored = (recipe.data.fitted or {}).get("target")
    if stored is not None and stored["name"] == target:
        coding = TargetCoding(stored["task"], stored["classes"], stored["mean"], stored["std"])
    else:
        coding = TargetCoding.fit(table, target)
    labels, keep = coding.encode(table, target)
    return TabularEvalDataset(
        features[keep], labels, coding.classes, coding.task, coding.mean, coding.std
    )


def has_split(recipe: TJEPARecipe, path: str, split: str) -> bool:
    return table_has_split(path, split)


def run_probe(request, recipe: TJEPARecipe) -> dict:
    """Linear and MLP heads on T-JEPA embeddings vs raw features (domains/tabular/probe.py)."""
    from jepactl.domains.tabular.probe import tabular_probe

    return tabular_probe(request, recipe)


def synthetic_data(
    recipe: TJEPARecipe, numeric: int = 6, categorical: int = 8, categories: int = 8
):
    """Return (random preprocessed rows, collate) for ``jepactl bench``.

    A run's recipe keeps its fitted columns; a recipe without ``data.fitted`` gets one fitted
    on a random table of Adult's shape (``numeric`` N(0,1) columns, ``categorical`` columns of
    ``categories`` values), as pretraining would fit it, so the tokenizer has the same layout.
    """
    import numpy as np
    import pandas as pd

    from jepactl.data.tables import ColumnRoles, Table

    rows = max(1024, 2 * recipe.train.batch_size)
    rng = np.random.default_rng(recipe.train.seed)
    if recipe.data.fitted is not None:
        pre = preprocessor(recipe)
        numeric, cards = pre.n_numeric, pre.cardinalities
        codes = [rng.integers(0, card, rows) for card in cards]
        features = np.concatenate(
            [
                rng.standard_normal((rows, numeric)),
                np.stack(codes, axis=1) if codes else np.zeros((rows, 0)),
            ],
            1,
        )
        features = torch.as_tensor(features, dtype=torch.float32)
    else:
        columns = {f"x{i}": rng.standard_normal(rows) for i in range(numeric)}
        columns.update(
            {f"c{i}": rng.integers(0, categories, rows).astype(str) for i in range(categorical)}
        )
        table = Table("synthetic", pd.DataFrame(columns))
        roles = ColumnRoles(
            [f"x{i}" for i in range(numeric)], [f"c{i}" for i in range(categorical)]
        )
        pre = TablePreprocessor.fit(
            table, roles, recipe.data.numeric_transform, recipe.data.quantiles
        )
        recipe.data.fitted = pre.to_dict()  # the model's tokenizer is built from the fit
        features = pre.transform(table)
    return TablePretrainDataset(features), masking_collate(recipe, pre.num_features)


SPEC = MethodSpec(
    "tjepa",
    TJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    run_probe=run_probe,
    labels_from="its labels are a column of the table: pass --target COLUMN",
)
