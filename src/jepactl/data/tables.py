"""Table readers: CSV (any delimiter), parquet files or folders, and ``datasets`` folders.

Every reader returns a :class:`Table`: a pandas frame whose cells are either numbers or
stripped strings, with every missing marker (``?``, empty, ``NA``, ...) turned into a real
missing value, plus the file name for error messages. Readers know nothing about models; the
column roles (numeric, categorical, target, dropped) are decided by :func:`column_roles` from
the data and the recipe's ``data`` section.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from jepactl.errors import DataError, RecipeError

SPLIT_ALIASES = {"train": ("train", "training"), "test": ("test", "testing", "val", "validation")}
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class TableDataConfig:
    """Where a table comes from and which column plays which role."""

    path: str | None = None  # CSV file, parquet file or folder, or a `datasets` save_to_disk dir
    target: str | None = None  # the label column: never a pretraining feature
    categorical: list[str] = field(default_factory=list)  # force these columns categorical
    numeric: list[str] = field(default_factory=list)  # force these columns numeric
    drop: list[str] = field(default_factory=list)  # ignore these columns (ids, leaks)
    delimiter: str | None = None  # CSV delimiter; null sniffs it from the first lines
    missing_values: list[str] = field(default_factory=lambda: ["?", "", "NA", "N/A", "NaN",
                                                                "nan", "null", "NULL", "None"])
    numeric_transform: Literal["standard", "quantile"] = "standard"
    quantiles: int = 1000  # quantile transform resolution (sklearn's default)
    # Written by pretraining (never by hand): the imputation/standardisation statistics and
    # category vocabularies fitted on the pretraining file. probe/embed/export reuse them.
    fitted: dict[str, Any] | None = None


@dataclass
class Table:
    """A read table: ``frame`` holds numbers or stripped strings, missing values as NaN/None."""

    name: str
    frame: pd.DataFrame


@dataclass
class ColumnRoles:
    numeric: list[str]
    categorical: list[str]


# ------------------------------------------------------------------------------ CSV


def _sniff_delimiter(path: Path) -> str:
    """Return the delimiter csv.Sniffer finds in the first 64 KiB (comma when unsure)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        sample = handle.read(65536)
    if not sample.strip():
        raise DataError(f"table '{path}' is empty")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_csv(path: Path, config: TableDataConfig) -> Table:
    """Return the CSV at ``path`` with a header row; cells stripped, missing markers as None."""
    if path.stat().st_size == 0:
        raise DataError(f"table '{path}' is empty")
    delimiter = config.delimiter or _sniff_delimiter(path)
    try:
        frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, na_values=[],
                            skipinitialspace=True, engine="c", encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise DataError(f"table '{path}' is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(f"table '{path}' is not a valid CSV: {err}".splitlines()[0]) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = set(config.missing_values)
    frame = frame.apply(lambda col: col.str.strip()).map(
        lambda v: None if v is None or v in missing else v)
    return Table(str(path), frame)


# ------------------------------------------------------------------------------ parquet / HF


def _check_flat(schema, name: str) -> None:
    import pyarrow as pa

    for column in schema:
        if pa.types.is_nested(column.type) or pa.types.is_dictionary(column.type) and \
                pa.types.is_nested(column.type.value_type):
            raise DataError(f"table '{name}' column '{column.name}' is nested ({column.type}); "
                            "flatten it into scalar columns first")


def _from_arrow(arrow_table, name: str, config: TableDataConfig) -> Table:
    _check_flat(arrow_table.schema, name)
    frame = arrow_table.to_pandas()
    missing = set(config.missing_values)
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) or \
                pd.api.types.is_bool_dtype(frame[column]):
            frame[column] = frame[column].map(
                lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                or str(v).strip() in missing else str(v).strip())
    frame.columns = [str(c).strip() for c in frame.columns]
    return Table(name, frame)


def parquet_files(root: Path, split: str | None) -> list[Path]:
    """Return the parquet files of ``split`` (``train-*.parquet``...) or all when split is None."""
    if root.is_file():
        return [root]
    files = sorted(p for s in PARQUET_SUFFIXES for p in root.glob(f"*{s}"))
    files += sorted(p for s in PARQUET_SUFFIXES for p in root.glob(f"data/*{s}"))
    if split is None:
        return files
    for alias in SPLIT_ALIASES.get(split, (split,)):
        chosen = [p for p in files if p.name.split("-")[0].split(".")[0].split("_")[0] == alias]
        if chosen:
            return chosen
    return []


def read_parquet(files: list[Path], name: str, config: TableDataConfig) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        tables = [pq.read_table(f) for f in files]
        arrow_table = pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"cannot read parquet '{name}': {err}".splitlines()[0]) from None
    if arrow_table.num_columns == 0:
        raise DataError(f"table '{name}' is empty")
    return _from_arrow(arrow_table, name, config)


def read_saved_dataset(root: Path, split: str | None, config: TableDataConfig) -> Table:
    """Return a ``datasets`` folder written by ``save_to_disk`` (a Dataset or DatasetDict)."""
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(root))
    except Exception as err:  # datasets raises many types for unreadable folders
        raise DataError(f"cannot read dataset '{root}': {err}".splitlines()[0]) from None
    if isinstance(dataset, DatasetDict):
        names = [a for a in SPLIT_ALIASES.get(split or "train", (split,)) if a in dataset]
        if not names:
            raise DataError(f"dataset '{root}' has no split '{split}' (has: {', '.join(dataset)})")
        dataset = dataset[names[0]]
    return _from_arrow(dataset.data.table, f"{root}[{split or 'all'}]", config)


# ------------------------------------------------------------------------------ entry points


def _is_saved_dataset(root: Path) -> bool:
    return root.is_dir() and ((root / "dataset_dict.json").exists()
                              or (root / "dataset_info.json").exists())


def has_split(path: str, split: str) -> bool:
    """Return True when ``path`` is a folder that holds the named split."""
    root = Path(path).expanduser()
    if _is_saved_dataset(root) and (root / "dataset_dict.json").exists():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        return any(a in splits for a in SPLIT_ALIASES.get(split, (split,)))
    if root.is_dir():
        return bool(parquet_files(root, split)) and bool(parquet_files(root, "train"))
    return False


def read_table(path: str, config: TableDataConfig, split: str | None = None) -> Table:
    """Return the table at ``path``: a CSV/TSV file, a parquet file or folder, a datasets dir.

    ``split`` picks ``train``/``test`` in folders that have splits; None means the training
    split when there is one, otherwise everything.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data path '{path}' does not exist")
    if _is_saved_dataset(root):
        table = read_saved_dataset(root, split, config)
    elif root.is_dir():
        has_splits = bool(parquet_files(root, "train"))
        files = parquet_files(root, (split or "train") if has_splits else None)
        if not files:
            raise DataError(f"data folder '{path}' has no parquet files"
                            + (f" for split '{split}'" if split else ""))
        table = read_parquet(files, f"{path}[{split or 'all'}]", config)
    elif root.suffix.lower() in PARQUET_SUFFIXES:
        table = read_parquet([root], str(root), config)
    else:
        table = read_csv(root, config)
    if len(table.frame.columns) == 0:
        raise DataError(f"table '{table.name}' has no columns")
    if len(table.frame) == 0:
        raise DataError(f"table '{table.name}' has a header but no rows")
    return table


# ------------------------------------------------------------------------------ column roles


def is_numeric_column(values: pd.Series) -> bool:
    """Return True when every present value is a number (strings like '3.5' count)."""
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = values.dropna()
    if len(present) == 0:
        return True
    return not pd.to_numeric(present, errors="coerce").isna().any()


def _check_names(table: Table, key: str, names: list[str]) -> None:
    unknown = [n for n in names if n not in table.frame.columns]
    if unknown:
        raise RecipeError(f"recipe key 'data.{key}' names column '{unknown[0]}', which is not in "
                          f"'{table.name}' (columns: {', '.join(table.frame.columns)})")


def require_column(table: Table, column: str, what: str = "target") -> None:
    if column not in table.frame.columns:
        raise DataError(f"table '{table.name}' has no {what} column '{column}' "
                        f"(columns: {', '.join(table.frame.columns)})")


def column_roles(table: Table, config: TableDataConfig) -> ColumnRoles:
    """Return the feature columns split into numeric and categorical, in file order.

    The target and ``data.drop`` columns are never features. ``data.categorical`` and
    ``data.numeric`` override the detection (a numeric code column can be categorical).
    """
    if config.target is not None:
        require_column(table, config.target)
    for key in ("categorical", "numeric", "drop"):
        _check_names(table, key, getattr(config, key))
    both = set(config.categorical) & set(config.numeric)
    if both:
        raise RecipeError(f"column '{sorted(both)[0]}' is in both data.categorical and "
                          "data.numeric")
    excluded = set(config.drop) | ({config.target} if config.target else set())
    features = [c for c in table.frame.columns if c not in excluded]
    if not features:
        raise DataError(f"table '{table.name}' has no feature columns besides the target/dropped "
                        f"ones ({', '.join(table.frame.columns)})")
    numeric, categorical = [], []
    for column in features:
        if column in config.categorical:
            categorical.append(column)
        elif column in config.numeric or is_numeric_column(table.frame[column]):
            numeric.append(column)
        else:
            categorical.append(column)
    return ColumnRoles(numeric, categorical)


def parse_numeric(table: Table, column: str) -> np.ndarray:
    """Return ``column`` as float64 with NaN for missing; a non-number is a DataError."""
    values = table.frame[column]
    if pd.api.types.is_bool_dtype(values):
        return values.astype(np.float64).to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"table '{table.name}' column '{column}' row {row + 1}: "
                        f"{values.iloc[row]!r} is not a number (the column is numeric)")
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan)


def category_strings(table: Table, column: str) -> list[str | None]:
    """Return ``column`` as stripped strings (None for missing); 3 and 3.0 read the same."""
    out = []
    for value in table.frame[column].tolist():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(None)
        elif isinstance(value, float) and value.is_integer():
            out.append(str(int(value)))
        else:
            out.append(str(value).strip())
    return out
