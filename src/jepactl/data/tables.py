"""Table readers: CSV (any delimiter), parquet files or folders, and ``datasets`` folders.

Every reader returns a :class:`Table`: a pandas frame whose cells are either numbers or
stripped strings, with every missing marker (``?``, empty, ``NA``, ...) turned into a real
missing value, plus the file name for error messages. Readers know nothing about models; the
column roles (numeric, categorical, target, dropped) are decided by :func:`column_roles` from
the data and the recipe's ``data`` section.

Many benchmark files ship as headerless numeric TSVs (label in the first column). Taking their
first row as the header would lose a row and name the columns by its values, so ``data.header``
(default ``auto``) decides per file (:func:`first_row_is_data`); headerless columns are named
``col0..colN-1`` and ``data.target`` may give the label column by its 0-based position.
"""

from __future__ import annotations

import csv
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pandas as pd

from jepactl.errors import DataError, RecipeError

log = logging.getLogger("jepactl")

SPLIT_ALIASES = {"train": ("train", "training"), "test": ("test", "testing", "val", "validation")}
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class TableDataConfig:
    """Where a table comes from and which column plays which role."""

    path: str | None = None  # CSV file, parquet file or folder, or a `datasets` save_to_disk dir
    # The label column, by name or by 0-based position (negative counts from the end): never a
    # pretraining feature. A position is replaced by the column's name when the table is read,
    # so the run's recipe records the name. Quote a column literally named 0: target: "0".
    target: int | str | None = None
    categorical: list[str] = field(default_factory=list)  # force these columns categorical
    numeric: list[str] = field(default_factory=list)  # force these columns numeric
    drop: list[str] = field(default_factory=list)  # ignore these columns (ids, leaks)
    delimiter: str | None = None  # CSV delimiter; null sniffs it from the first lines
    # CSV: does the first row name the columns? auto: no when it looks like data (all numbers,
    # see first_row_is_data); headerless columns are named col0..colN-1.
    header: bool | Literal["auto"] = "auto"
    missing_values: list[str] = field(
        default_factory=lambda: ["?", "", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
    )
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


def _read_csv_cells(
    path: Path, delimiter: str, header: bool, rows: int | None = None
) -> pd.DataFrame:
    """Return the CSV's cells as unstripped strings; ``header`` takes the first row as names."""
    try:
        return pd.read_csv(
            path,
            sep=delimiter,
            header=0 if header else None,
            nrows=rows,
            dtype=str,
            keep_default_na=False,
            na_values=[],
            skipinitialspace=True,
            engine="c",
            encoding_errors="replace",
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"table '{path}' is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(f"table '{path}' is not a valid CSV: {err}".splitlines()[0]) from None


def first_row_is_data(sample: pd.DataFrame, missing: set[str]) -> bool:
    """Return True when the first row of ``sample`` (read without a header) is data, not names.

    A header names columns, so it has at least one cell that is not a number: the first row is
    data when every present cell of it is a number and the rows below are numbers in those
    columns too. One exception: a first row that counts 0..N-1 or 1..N is the names pandas and
    numpy writers give unnamed columns, so it is a header. Missing cells (an unnamed index
    column, a missing value) count for neither. csv.Sniffer().has_header is not consulted: it
    votes by int-versus-float per column, so a data row holding a whole number in a float
    column ("0" above "0.5") would read as a header.
    """
    if len(sample) == 0:
        return False
    first = sample.iloc[0].str.strip()
    present = first[~first.isin(missing)]
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) == 0 or numbers.isna().any():
        return False
    counted = numbers.tolist()
    if counted in (list(range(len(counted))), list(range(1, len(counted) + 1))):
        return False
    below = sample.iloc[1:][present.index].apply(lambda col: col.str.strip())
    return all(is_numeric_column(below[c].where(~below[c].isin(missing))) for c in below)


def read_csv(path: Path, config: TableDataConfig) -> Table:
    """Return the CSV at ``path``; cells stripped, missing markers as None.

    Whether the first row holds the column names is ``data.header``; ``auto`` decides with
    :func:`first_row_is_data` on the first 1000 rows and says so when it finds no header.
    """
    if path.stat().st_size == 0:
        raise DataError(f"table '{path}' is empty")
    delimiter = config.delimiter or _sniff_delimiter(path)
    missing = set(config.missing_values)
    header = config.header
    if header == "auto":
        header = not first_row_is_data(_read_csv_cells(path, delimiter, False, 1000), missing)
    frame = _read_csv_cells(path, delimiter, header)
    if header:
        frame.columns = [str(c).strip() for c in frame.columns]
    else:
        frame.columns = [f"col{i}" for i in range(len(frame.columns))]
        if config.header == "auto":
            log.warning(
                "'%s' has no header row (first row is all numbers): columns named col0..col%d%s",
                path,
                len(frame.columns) - 1,
                _target_note(config.target, list(frame.columns)),
            )
    frame = frame.apply(lambda col: col.str.strip()).map(
        lambda v: None if v is None or v in missing else v
    )
    return Table(str(path), frame)


# ------------------------------------------------------------------------------ parquet / HF


def _check_flat(schema, name: str) -> None:
    import pyarrow as pa

    for column in schema:
        if (
            pa.types.is_nested(column.type)
            or pa.types.is_dictionary(column.type)
            and pa.types.is_nested(column.type.value_type)
        ):
            raise DataError(
                f"table '{name}' column '{column.name}' is nested ({column.type}); "
                "flatten it into scalar columns first"
            )


def _from_arrow(arrow_table, name: str, config: TableDataConfig) -> Table:
    _check_flat(arrow_table.schema, name)
    frame = arrow_table.to_pandas()
    missing = set(config.missing_values)
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(
            frame[column]
        ):
            frame[column] = frame[column].map(
                lambda v: (
                    None
                    if v is None
                    or (isinstance(v, float) and np.isnan(v))
                    or str(v).strip() in missing
                    else str(v).strip()
                )
            )
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


def parquet_error(file: Path, err: Exception) -> DataError:
    """Return the one-line error for an unreadable parquet ``file`` (named once, not twice)."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    # pyarrow repeats the path: "Could not open Parquet input source '<path>': <reason>".
    reason = reason.split(f"'{file}': ", 1)[-1]
    return DataError(f"cannot read parquet '{file}': {reason}")


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence the ``datasets`` library while it reads; keep it to errors afterwards.

    On a corrupt file it logs its own error (once through its handler, once more through the
    root logger) and may draw progress bars, all before jepactl's one-line error. jepactl
    reports progress itself, so the bars stay off.
    """
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_parquet(files: list[Path], name: str, config: TableDataConfig) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except (pa.ArrowException, OSError) as err:
            raise parquet_error(file, err) from None
    try:
        arrow_table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as err:
        raise DataError(
            f"cannot join the parquet files of '{name}': {err}".splitlines()[0]
        ) from None
    if arrow_table.num_columns == 0:
        raise DataError(f"table '{name}' is empty")
    return _from_arrow(arrow_table, name, config)


def load_saved_split(root: Path, split: str | None):
    """Return one split of a ``datasets`` folder written by ``save_to_disk`` (a Dataset, or a
    DatasetDict whose split is found under its usual aliases); shared by tables and images."""
    from datasets import DatasetDict, load_from_disk

    try:
        with quiet_datasets():
            dataset = load_from_disk(str(root))
    except Exception as err:  # datasets raises many types for unreadable folders
        raise DataError(f"cannot read dataset '{root}': {err}".splitlines()[0]) from None
    if isinstance(dataset, DatasetDict):
        names = [a for a in SPLIT_ALIASES.get(split or "train", (split,)) if a in dataset]
        if not names:
            raise DataError(f"dataset '{root}' has no split '{split}' (has: {', '.join(dataset)})")
        dataset = dataset[names[0]]
    return dataset


def read_saved_dataset(root: Path, split: str | None, config: TableDataConfig) -> Table:
    """Return a ``datasets`` folder written by ``save_to_disk`` (a Dataset or DatasetDict)."""
    dataset = load_saved_split(root, split)
    return _from_arrow(dataset.data.table, f"{root}[{split or 'all'}]", config)


# ------------------------------------------------------------------------------ entry points


def _is_saved_dataset(root: Path) -> bool:
    return root.is_dir() and (
        (root / "dataset_dict.json").exists() or (root / "dataset_info.json").exists()
    )


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
            raise DataError(
                f"data folder '{path}' has no parquet files"
                + (f" for split '{split}'" if split else "")
            )
        table = read_parquet(files, f"{path}[{split or 'all'}]", config)
    elif root.suffix.lower() in PARQUET_SUFFIXES:
        table = read_parquet([root], str(root), config)
    else:
        table = read_csv(root, config)
    if len(table.frame.columns) == 0:
        raise DataError(f"table '{table.name}' has no columns")
    if len(table.frame) == 0:
        raise DataError(f"table '{table.name}' has a header but no rows")
    target_column(table, config)
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
        raise RecipeError(
            f"recipe key 'data.{key}' names column '{unknown[0]}', which is not in "
            f"'{table.name}' (columns: {', '.join(table.frame.columns)})"
        )


def _target_note(target: int | str | None, columns: list[str]) -> str:
    """Return "; data.target=0 is col0" when ``target`` is a position inside ``columns``."""
    if isinstance(target, int) and -len(columns) <= target < len(columns):
        return f"; data.target={target} is {columns[target]}"
    return ""


def target_column(table: Table, config: TableDataConfig) -> str | None:
    """Return the name of the ``data.target`` column (None without a target).

    A position (an integer) is replaced by its column's name in ``config``, so the recipe a
    run writes names the column and later reads of other files find it by name.
    """
    target = config.target
    if isinstance(target, int) and not isinstance(target, bool):
        columns = list(table.frame.columns)
        if not -len(columns) <= target < len(columns):
            raise DataError(
                f"data.target={target} is out of range: table '{table.name}' has "
                f"{len(columns)} columns (positions 0..{len(columns) - 1})"
            )
        config.target = columns[target]
    return config.target


def require_column(table: Table, column: str, what: str = "target") -> None:
    if column not in table.frame.columns:
        raise DataError(
            f"table '{table.name}' has no {what} column '{column}' "
            f"(columns: {', '.join(table.frame.columns)})"
        )


def column_roles(table: Table, config: TableDataConfig) -> ColumnRoles:
    """Return the feature columns split into numeric and categorical, in file order.

    The target and ``data.drop`` columns are never features. ``data.categorical`` and
    ``data.numeric`` override the detection (a numeric code column can be categorical).
    """
    target = target_column(table, config)
    if target is not None:
        require_column(table, target)
    for key in ("categorical", "numeric", "drop"):
        _check_names(table, key, getattr(config, key))
    both = set(config.categorical) & set(config.numeric)
    if both:
        raise RecipeError(
            f"column '{sorted(both)[0]}' is in both data.categorical and data.numeric"
        )
    excluded = set(config.drop) | ({target} if target is not None else set())
    features = [c for c in table.frame.columns if c not in excluded]
    if not features:
        raise DataError(
            f"table '{table.name}' has no feature columns besides the target/dropped "
            f"ones ({', '.join(table.frame.columns)})"
        )
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
        raise DataError(
            f"table '{table.name}' column '{column}' row {row + 1}: "
            f"{values.iloc[row]!r} is not a number (the column is numeric)"
        )
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
