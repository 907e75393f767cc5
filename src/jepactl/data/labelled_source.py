"""The base of evaluation datasets over a labelled file source (image folders, SAR chips)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class LabelledSourceDataset(Dataset):
    """Item ``i`` -> (tensor, label) of ``source``'s file ``i``; subclasses load and transform.

    ``source`` has ``labels`` (one int per file, -1 when unlabelled) and ``classes``; the
    evaluation code reads both from the dataset (``labels`` as a tensor).
    """

    def __init__(self, source: Any, config: Any) -> None:
        self.source, self.config = source, config
        self.labels = torch.as_tensor(source.labels)
        self.classes = source.classes

    def __len__(self) -> int:
        return len(self.source)

    def sample_ids(self) -> list[str]:
        """Each item's file (image folders: ``files``, chip folders: ``paths``), for ``embed``;
        [] when the source has no files (parquet rows, built-in sets)."""
        files = getattr(self.source, "files", None) or getattr(self.source, "paths", None) or []
        return [str(f) for f in files]
