"""Tabular data (T-JEPA): CSV/parquet tables, feature-subset masks, the tabular probe."""
