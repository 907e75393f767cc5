"""The one aggregation of seeded repeats: every probe reports its metrics the same way."""

from __future__ import annotations

import math


def aggregate(per_seed: list[dict[str, float]]) -> dict[str, float | list[float]]:
    """Return, for every metric of the per-seed rows: ``metric`` (the mean over seeds),
    ``metric_std`` (the sample standard deviation, 0.0 for one seed) and ``metric_per_seed``.

    Every row has the same keys (the first row's order is kept). A NaN in a metric (e.g. an
    AUC on a test split holding one class) makes its mean and std NaN.
    """
    out: dict[str, float | list[float]] = {}
    for key in per_seed[0]:
        values = [float(row[key]) for row in per_seed]
        mean = math.fsum(values) / len(values)
        out[key] = mean
        out[f"{key}_std"] = (
            math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else 0.0
        )
        out[f"{key}_per_seed"] = values
    return out
