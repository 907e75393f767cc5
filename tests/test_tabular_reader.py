"""Table reading, column roles, fitted preprocessing and target coding (data/tables.py, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from jepactl.data.table_preprocess import MISSING_CODE, UNSEEN_CODE, TablePreprocessor, \
    TargetCoding
from jepactl.data.tables import TableDataConfig, column_roles, read_table
from jepactl.errors import DataError, RecipeError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_sniffs_delimiter_strips_whitespace_and_reads_missing_markers(tmp_path):
    path = write(tmp_path / "t.csv", " a ; b ;c\n1; x ;?\n NA ;y; 2.5\n3;;NA\n")
    table = read_table(path, TableDataConfig())
    assert list(table.frame.columns) == ["a", "b", "c"]
    assert table.frame["b"].isna().tolist() == [False, False, True]
    assert table.frame["b"][:2].tolist() == ["x", "y"]
    assert table.frame["c"].isna().tolist() == [True, False, True]
    roles = column_roles(table, TableDataConfig())
    assert roles.numeric == ["a", "c"] and roles.categorical == ["b"]


def test_recipe_overrides_roles_and_target_is_never_a_feature(tmp_path):
    path = write(tmp_path / "t.csv", "id,code,v,y\n1,10,a,0\n2,20,b,1\n")
    cfg = TableDataConfig(target="y", categorical=["code"], drop=["id"])
    roles = column_roles(read_table(path, cfg), cfg)
    assert roles.numeric == [] and roles.categorical == ["code", "v"]
    with pytest.raises(RecipeError, match="data.numeric.*'nope'"):
        column_roles(read_table(path, cfg), TableDataConfig(numeric=["nope"]))


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("a,b\n", "header but no rows"),
    ("y\n1\n0\n", "no feature columns"),
])
def test_unusable_files_raise_one_line_data_errors(tmp_path, text, message):
    path = write(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=message) as err:
        column_roles(read_table(path, TableDataConfig(target="y")), TableDataConfig(target="y"))
    assert "\n" not in str(err.value)


def test_missing_target_column_names_the_file_and_columns(tmp_path):
    path = write(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="no target column 'income'.*columns: a, b"):
        column_roles(read_table(path, TableDataConfig()), TableDataConfig(target="income"))


def test_parquet_reads_and_nested_columns_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, None, 3.0], "c": ["a", "?", "b"]}), tmp_path / "f.parquet")
    table = read_table(str(tmp_path / "f.parquet"), TableDataConfig())
    assert table.frame["c"].isna().tolist() == [False, True, False]
    assert np.isnan(table.frame["x"][1])
    pq.write_table(pa.table({"x": [1, 2], "n": [[1, 2], [3]]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="column 'n' is nested"):
        read_table(str(tmp_path / "n.parquet"), TableDataConfig())


def test_datasets_folder_with_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"x": [1, 2, 3], "y": [0, 1, 0]}),
                 "test": Dataset.from_dict({"x": [4], "y": [1]})}).save_to_disk(tmp_path / "ds")
    assert len(read_table(str(tmp_path / "ds"), TableDataConfig()).frame) == 3
    assert read_table(str(tmp_path / "ds"), TableDataConfig(), "test").frame["x"].tolist() == [4]


def test_preprocessing_imputes_median_flags_missing_and_reuses_training_stats(tmp_path):
    cfg = TableDataConfig()
    train = read_table(write(tmp_path / "a.csv", "n,c\n1,u\n3,v\n,u\n5,\n"), cfg)
    pre = TablePreprocessor.fit(train, column_roles(train, cfg))
    x = pre.transform(train)
    assert pre.token_names == ["n", "n__missing", "c"] and pre.cardinalities == [4]
    filled = np.array([1, 3, 3, 5.0])  # median of 1, 3, 5 fills the blank
    assert torch.allclose(x[:, 0], torch.tensor((filled - filled.mean()) / filled.std()).float())
    assert x[:, 1].tolist() == [0, 0, 1, 0]
    assert x[:, 2].tolist() == [2, 3, 2, MISSING_CODE]
    # New file: training statistics unchanged, an unseen category has its own code.
    new = read_table(write(tmp_path / "b.csv", "n,c\n3,w\n"), cfg)
    restored = TablePreprocessor(json.loads(json.dumps(pre.to_dict())))
    y = restored.transform(new)
    assert y[0, 0].item() == pytest.approx((3 - filled.mean()) / filled.std(), abs=1e-6)
    assert y[0, 2].item() == UNSEEN_CODE
    with pytest.raises(DataError, match="column 'n' row 2: 'abc' is not a number"):
        restored.transform(read_table(write(tmp_path / "c.csv", "n,c\n1,u\nabc,u\n"), cfg))


def test_quantile_transform_is_monotone_and_roughly_normal(tmp_path):
    values = np.random.default_rng(0).exponential(size=2000)
    path = tmp_path / "q.csv"
    pd.DataFrame({"v": values, "w": values * 2}).to_csv(path, index=False)
    table = read_table(str(path), TableDataConfig())
    pre = TablePreprocessor.fit(table, column_roles(table, TableDataConfig()), "quantile", 100)
    z = pre.transform(table)[:, 0]
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.1
    assert bool((z[np.argsort(values)].diff() >= -1e-6).all())


def test_target_coding_detects_task_and_reads_uci_trailing_periods(tmp_path):
    cfg = TableDataConfig()
    train = read_table(write(tmp_path / "a.csv", "x,y\n1,<=50K\n2,>50K\n"), cfg)
    test = read_table(write(tmp_path / "b.csv", "x,y\n1,>50K.\n2,<=50K.\n"), cfg)
    coding = TargetCoding.fit(train, "y")
    assert coding.task == "classification"
    assert coding.encode(test, "y")[0].tolist() == [1, 0]
    numbers = "\n".join(f"{i},{i * 1.5}" for i in range(60))
    reg = TargetCoding.fit(read_table(write(tmp_path / "r.csv", "x,y\n" + numbers), cfg), "y")
    assert reg.task == "regression" and reg.mean == pytest.approx(44.25)


@pytest.mark.skipif(not (SHARED / "tabular").is_dir(), reason="shared data not present")
def test_adult_columns_and_missing_counts():
    cfg = TableDataConfig(target="ltgt50k")
    table = read_table(str(SHARED / "tabular/adult/adult.data"), cfg)
    roles = column_roles(table, cfg)
    assert len(table.frame) == 32561
    assert len(roles.numeric) == 6 and len(roles.categorical) == 8
    assert int(table.frame["workclass"].isna().sum()) == 1836
