"""Fitted table preprocessing: imputation, standardisation or quantile transform, vocabularies.

Statistics are fitted once, on the pretraining data only, and kept as a plain JSON-safe dict
(``TablePreprocessor.to_dict``). Pretraining writes that dict into the run's recipe
(``data.fitted``) and the encoder's tokenizer config, so the checkpoint's recipe, ``export``'s
config.json, ``probe`` and ``embed`` all apply the very same numbers to new files.

A table becomes one float tensor (N, F) with one column per feature token, in this order:
numeric features (transformed), is-missing indicators (one per numeric column that had missing
values in the pretraining data), categorical features as integer codes. Code 0 is "missing",
code 1 "a category not seen in pretraining", codes 2.. the pretraining categories sorted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from jepactl.data.tables import ColumnRoles, Table, category_strings, parse_numeric, require_column
from jepactl.errors import DataError

MISSING_CODE, UNSEEN_CODE, FIRST_CATEGORY_CODE = 0, 1, 2
FORMAT_VERSION = 1


class TablePreprocessor:
    """Turns tables into feature tensors with statistics fitted on the pretraining table."""

    def __init__(self, stats: dict[str, Any]) -> None:
        if stats.get("version") != FORMAT_VERSION:
            raise DataError(
                f"fitted preprocessing has version {stats.get('version')!r}; "
                f"this jepactl reads version {FORMAT_VERSION}"
            )
        self.stats = stats
        self.numeric: list[dict] = stats["numeric"]
        self.categorical: list[dict] = stats["categorical"]
        self.transform_kind: str = stats["transform"]

    # -------------------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls, table: Table, roles: ColumnRoles, transform: str = "standard", quantiles: int = 1000
    ) -> "TablePreprocessor":
        """Return a preprocessor fitted on ``table`` for the given feature roles."""
        numeric = []
        for column in roles.numeric:
            values = parse_numeric(table, column)
            present = values[~np.isnan(values)]
            if len(present) == 0:
                raise DataError(
                    f"table '{table.name}' numeric column '{column}' has no values; "
                    "drop it with data.drop"
                )
            median = float(np.median(present))
            filled = np.where(np.isnan(values), median, values)
            entry = {
                "name": column,
                "median": median,
                "mean": float(filled.mean()),
                "std": float(filled.std()),
                "indicator": bool(np.isnan(values).any()),
                "quantiles": None,
            }
            if transform == "quantile":
                levels = np.linspace(0, 1, min(quantiles, len(filled)))
                entry["quantiles"] = np.quantile(filled, levels).tolist()
            numeric.append(entry)
        categorical = []
        for column in roles.categorical:
            values = sorted({v for v in category_strings(table, column) if v is not None})
            categorical.append({"name": column, "values": values})
        return cls(
            {
                "version": FORMAT_VERSION,
                "transform": transform,
                "numeric": numeric,
                "categorical": categorical,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return self.stats

    # -------------------------------------------------------------------------- shape

    @property
    def columns(self) -> list[str]:
        """Return the source column of each numeric feature, indicator and categorical feature."""
        return (
            [c["name"] for c in self.numeric]
            + [c["name"] for c in self.numeric if c["indicator"]]
            + [c["name"] for c in self.categorical]
        )

    @property
    def token_names(self) -> list[str]:
        return (
            [c["name"] for c in self.numeric]
            + [c["name"] + "__missing" for c in self.numeric if c["indicator"]]
            + [c["name"] for c in self.categorical]
        )

    @property
    def n_numeric(self) -> int:
        """Return the number of real-valued tokens: numeric columns plus missing indicators."""
        return len(self.numeric) + sum(c["indicator"] for c in self.numeric)

    @property
    def cardinalities(self) -> list[int]:
        return [len(c["values"]) + FIRST_CATEGORY_CODE for c in self.categorical]

    @property
    def num_features(self) -> int:
        return self.n_numeric + len(self.categorical)

    def tokens_of(self, column: str) -> list[int]:
        """Return the feature-token positions fed by source ``column`` (empty if none)."""
        return [i for i, name in enumerate(self.columns) if name == column]

    # -------------------------------------------------------------------------- transform

    def _numeric(self, entry: dict, values: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(values), entry["median"], values)
        if self.transform_kind == "quantile":
            # sklearn's QuantileTransformer(output_distribution="normal"): average the forward
            # and backward interpolation so ties map to the middle of their quantile run.
            q = np.asarray(entry["quantiles"])
            levels = np.linspace(0, 1, len(q))
            uniform = 0.5 * (
                np.interp(filled, q, levels) - np.interp(-filled, -q[::-1], -levels[::-1])
            )
            clip = 1e-7
            uniform = torch.as_tensor(np.clip(uniform, clip, 1 - clip))
            return torch.special.ndtri(uniform).numpy()
        return (filled - entry["mean"]) / (entry["std"] if entry["std"] > 0 else 1.0)

    def transform(self, table: Table) -> torch.Tensor:
        """Return the feature tensor (N, F) float32 of ``table`` (columns as fitted)."""
        for name in [c["name"] for c in self.numeric + self.categorical]:
            require_column(table, name, what="feature")
        parts, indicators = [], []
        for entry in self.numeric:
            values = parse_numeric(table, entry["name"])
            parts.append(self._numeric(entry, values))
            if entry["indicator"]:
                indicators.append(np.isnan(values).astype(np.float64))
        for entry in self.categorical:
            lookup = {v: i + FIRST_CATEGORY_CODE for i, v in enumerate(entry["values"])}
            codes = [
                MISSING_CODE if v is None else lookup.get(v, UNSEEN_CODE)
                for v in category_strings(table, entry["name"])
            ]
            parts.append(np.asarray(codes, dtype=np.float64))
        numeric_count = len(self.numeric)
        columns = parts[:numeric_count] + indicators + parts[numeric_count:]
        if not columns:
            return torch.zeros(len(table.frame), 0)
        return torch.as_tensor(np.stack(columns, axis=1), dtype=torch.float32)

    def one_hot(self, features: torch.Tensor) -> torch.Tensor:
        """Return raw model inputs: real-valued tokens as they are, categorical codes one-hot."""
        real = features[:, : self.n_numeric]
        codes = features[:, self.n_numeric :].long()
        hots = [
            torch.nn.functional.one_hot(codes[:, j], card).float()
            for j, card in enumerate(self.cardinalities)
        ]
        return torch.cat([real] + hots, dim=1)


# ------------------------------------------------------------------------------ targets


@dataclass
class TargetCoding:
    """How a target column becomes labels: class indices, or a standardised real value."""

    task: str  # classification or regression
    classes: list[str]
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(
        cls, table: Table, column: str, task: str | None = None, max_classes: int = 50
    ) -> "TargetCoding":
        """Return the coding of ``column``; the task is detected when ``task`` is None.

        A numeric target with more than ``max_classes`` distinct values, or with non-integer
        values, is a regression target.
        """
        require_column(table, column)
        raw = category_strings(table, column)
        present = [v for v in raw if v is not None]
        if not present:
            raise DataError(f"table '{table.name}' target column '{column}' has no values")
        numbers = _as_numbers(present)
        if task is None:
            distinct = set(present)
            task = (
                "regression"
                if numbers is not None
                and (len(distinct) > max_classes or not np.all(np.mod(numbers, 1) == 0))
                else "classification"
            )
        if task == "regression":
            if numbers is None:
                raise DataError(
                    f"table '{table.name}' target column '{column}' is not numeric; "
                    "regression needs numbers (use --task classification)"
                )
            return cls("regression", [], float(numbers.mean()), float(numbers.std()) or 1.0)
        if task != "classification":
            raise DataError(f"--task must be classification or regression, got '{task}'")
        classes = sorted({_label_name(v) for v in present})
        if len(classes) < 2:
            raise DataError(
                f"table '{table.name}' target column '{column}' has only one class ({classes[0]!r})"
            )
        return cls("classification", classes)

    def encode(self, table: Table, column: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (labels, rows that have a label): long class indices or float standardised."""
        require_column(table, column)
        raw = category_strings(table, column)
        keep = np.array([v is not None for v in raw])
        present = [v for v in raw if v is not None]
        if self.task == "regression":
            numbers = _as_numbers(present)
            if numbers is None:
                bad = next(v for v in present if _as_numbers([v]) is None)
                raise DataError(
                    f"table '{table.name}' target column '{column}': {bad!r} is not a number"
                )
            labels = torch.as_tensor((numbers - self.mean) / self.std, dtype=torch.float32)
        else:
            index = {c: i for i, c in enumerate(self.classes)}
            unknown = [v for v in present if _label_name(v) not in index]
            if unknown:
                raise DataError(
                    f"table '{table.name}' target column '{column}' has class "
                    f"{unknown[0]!r}, which the training data does not have "
                    f"({', '.join(self.classes)})"
                )
            labels = torch.as_tensor([index[_label_name(v)] for v in present], dtype=torch.long)
        return labels, torch.as_tensor(keep)


def _label_name(value: str) -> str:
    # UCI files (Adult's test split) end each label with a period: '>50K.' is '>50K'.
    return value[:-1] if value.endswith(".") and not _is_number(value) else value


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _as_numbers(values: list[str]) -> np.ndarray | None:
    try:
        numbers = np.asarray([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return None
    return numbers if np.isfinite(numbers).all() else None
