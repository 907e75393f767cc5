"""Measurements on a trajectory: per-feature gains, critical times, and the probe onto z.

- The encoder's gain along feature i is ‖W̄ e_i‖ (the column norm); with the aligned
  initialisation W̄ stays diagonal and this is |W̄_ii|, the quantity methods.md plots.
- A feature's critical time is the first time its gain reaches half its final value, linearly
  interpolated between recorded points. A feature whose gain never grew (final < 2× its
  initial value: not learned, or collapsed to 0) has no critical time (NaN).
- The probe: R² of the best linear readout of the clean latent z from the top-k principal
  components of the encoder output h = W̄x, computed in closed form from the covariances.
  Why top-k: a full-rank linear map of x carries the same linear information about z whatever
  W̄ is, so an unrestricted probe cannot tell the objectives apart; restricting the readout to
  the k directions the encoder amplifies most asks what those directions are worth.
"""

from __future__ import annotations

import math

import numpy as np

from jepactl.domains.linear.features import Moments


def feature_gains(encoders: np.ndarray) -> np.ndarray:
    """Return ‖W̄ e_i‖ for every model and feature, (P, d), from dense (P, d, d) encoders."""
    return np.linalg.norm(encoders, axis=-2)


def probe_r2(encoders: np.ndarray, moments: Moments, components: int) -> np.ndarray:
    """Return each model's R² of z from the top-``components`` principal components of W̄x."""
    m = moments.dense()
    cov_h = encoders @ m.xx @ np.swapaxes(encoders, -1, -2)  # Σhh = W̄ Σxx W̄ᵀ
    cov_zh = m.zx @ np.swapaxes(encoders, -1, -2)  # Σzh = Σzx W̄ᵀ
    values, vectors = np.linalg.eigh(cov_h)  # ascending
    k = min(components, values.shape[-1])
    top_values, top_vectors = values[..., -k:], vectors[..., -k:]
    explained = np.square(cov_zh @ top_vectors).sum(axis=-2)  # ‖Σzh u_j‖², (P, k)
    # Directions with no variance carry nothing; the floor keeps 0/0 out at ε-scale weights.
    floor = 1e-12 * np.maximum(values[..., -1:], 1e-300)
    ratio = np.where(top_values > floor, explained / np.maximum(top_values, 1e-300), 0.0)
    return ratio.sum(axis=-1) / np.trace(m.zz)


def critical_times(times: np.ndarray, gains: np.ndarray, min_growth: float = 2.0) -> np.ndarray:
    """Return t* per model and feature, (P, d), from ``gains`` (R, P, d) at ``times`` (R, P)."""
    final, initial = gains[-1], gains[0]
    threshold = final / 2.0
    out = np.full(final.shape, math.nan)
    for index in np.ndindex(final.shape):
        if not final[index] >= min_growth * initial[index]:
            continue
        series, clock = gains[(slice(None),) + index], times[:, index[0]]
        hit = int(np.argmax(series >= threshold[index]))
        if hit == 0:
            out[index] = clock[0]
            continue
        g0, g1 = series[hit - 1], series[hit]
        t0, t1 = clock[hit - 1], clock[hit]
        out[index] = t0 + (threshold[index] - g0) / (g1 - g0) * (t1 - t0)
    return out


def learning_order(times: np.ndarray, names: tuple[str, ...]) -> str:
    """Return the features in the order they were learned, e.g. ``influential < noisy``."""
    learned = [(t, n) for t, n in zip(times, names) if not math.isnan(t)]
    order = " < ".join(n for _, n in sorted(learned))
    missing = [n for t, n in zip(times, names) if math.isnan(t)]
    if not missing:
        return order
    return f"{order} (not learned: {', '.join(missing)})" if order else "none learned"
