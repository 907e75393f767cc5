"""The two-view linear data model: per-feature covariance λ_i and influence ρ_i.

Per feature i the views are x_i = z_i + σ_i ξ_i and y_i = z_i + σ_i ξ'_i with a clean latent
z_i ~ N(0, s_i²) and independent unit noises ξ, ξ'. Then (methods.md §7)

    λ_i = E[x_i²] = s_i² + σ_i²,     ρ_i = E[y_i x_i] / E[x_i²] = s_i² / (s_i² + σ_i²),

and every covariance the objectives need is diagonal: Σxx = Σyy = diag(λ), Σyx = diag(ρλ),
and for the probe Σzx = Σzz = diag(s²). Features can be given either way; (λ, ρ) is mapped
back to s² = ρλ, σ² = (1 - ρ)λ, which is why 0 < ρ ≤ 1 is required.

Two data modes: ``population`` gives the exact covariances (so gradient descent follows the
population gradient), ``samples`` draws N pairs once from ``data.seed`` and yields the
covariances of seeded mini-batches, one per step (the mini-batch loss's exact gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jepactl.data.sampling import mix_seed
from jepactl.errors import RecipeError


@dataclass(frozen=True)
class FeatureSet:
    """Per-feature signal variance s² and noise variance σ² of the two-view model."""

    names: tuple[str, ...]
    signal_var: np.ndarray  # s_i²
    noise_var: np.ndarray  # σ_i²

    @property
    def lambdas(self) -> np.ndarray:
        return self.signal_var + self.noise_var

    @property
    def rhos(self) -> np.ndarray:
        return self.signal_var / self.lambdas

    @property
    def dim(self) -> int:
        return len(self.names)

    @staticmethod
    def from_lambda_rho(names: list[str], lambdas: list[float], rhos: list[float]) -> "FeatureSet":
        """Return the features with E[x_i²] = λ_i and regression coefficient ρ_i of y_i on x_i."""
        lam, rho = _checked(names, lambdas, "data.lambdas"), _checked(names, rhos, "data.rhos")
        if np.any(lam <= 0):
            raise RecipeError(f"recipe key 'data.lambdas': every λ must be > 0, got {list(lam)}")
        if np.any(rho <= 0) or np.any(rho > 1):
            raise RecipeError(
                f"recipe key 'data.rhos': every ρ must be in (0, 1] (ρ = s²/(s²+σ²)"
                f" in the two-view model), got {list(rho)}"
            )
        return FeatureSet(tuple(names), rho * lam, (1.0 - rho) * lam)

    @staticmethod
    def from_signal_noise(
        names: list[str], signal_std: list[float], noise_std: list[float]
    ) -> "FeatureSet":
        """Return the features of x_i = z_i + σ_i ξ with z_i ~ N(0, s_i²)."""
        s = _checked(names, signal_std, "data.signal_std")
        sigma = _checked(names, noise_std, "data.noise_std")
        if np.any(s <= 0) or np.any(sigma < 0):
            raise RecipeError(
                "recipe keys 'data.signal_std' / 'data.noise_std': need s > 0 and "
                f"σ ≥ 0, got {list(s)} / {list(sigma)}"
            )
        return FeatureSet(tuple(names), s**2, sigma**2)


def _checked(names: list[str], values: list[float], key: str) -> np.ndarray:
    if len(values) != len(names):
        raise RecipeError(
            f"recipe key '{key}': expected {len(names)} values (one per name in "
            f"data.names), got {len(values)}"
        )
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class Moments:
    """Second moments the objectives and the probe read: Σxx, Σyx = E[y xᵀ], Σyy, Σzx, Σzz.

    Each is a (d,) diagonal or a (d, d) matrix; ``diagonal`` says which.
    """

    xx: np.ndarray
    yx: np.ndarray
    yy: np.ndarray
    zx: np.ndarray
    zz: np.ndarray

    @property
    def diagonal(self) -> bool:
        return self.xx.ndim == 1

    def dense(self) -> "Moments":
        if not self.diagonal:
            return self
        return Moments(*(np.diag(m) for m in (self.xx, self.yx, self.yy, self.zx, self.zz)))


def population_moments(features: FeatureSet) -> Moments:
    """Return the exact (diagonal) covariances of the two-view model."""
    s2 = features.signal_var
    return Moments(
        xx=features.lambdas, yx=s2.copy(), yy=features.lambdas, zx=s2.copy(), zz=s2.copy()
    )


@dataclass(frozen=True)
class TwoViewSamples:
    """N pairs (x, y) and their clean latents z, drawn once from a seed."""

    x: np.ndarray  # (N, d)
    y: np.ndarray
    z: np.ndarray

    @staticmethod
    def draw(features: FeatureSet, num_pairs: int, seed: int) -> "TwoViewSamples":
        rng = np.random.default_rng(mix_seed(seed, 7))
        n, d = num_pairs, features.dim
        z = rng.standard_normal((n, d)) * np.sqrt(features.signal_var)
        sigma = np.sqrt(features.noise_var)
        x = z + sigma * rng.standard_normal((n, d))
        y = z + sigma * rng.standard_normal((n, d))
        return TwoViewSamples(x, y, z)

    def moments(self) -> Moments:
        """Return the empirical second moments of all N pairs (dense)."""
        n = len(self.x)
        return Moments(
            xx=self.x.T @ self.x / n,
            yx=self.y.T @ self.x / n,
            yy=self.y.T @ self.y / n,
            zx=self.z.T @ self.x / n,
            zz=self.z.T @ self.z / n,
        )


class MiniBatchMoments:
    """Per-step mini-batch covariances (Σ̂xx, Σ̂yx, Σ̂yy) of seeded shuffles of the N pairs.

    Step ``k`` uses batch ``k mod B`` of epoch ``k // B`` (B = N // batch_size; the last partial
    batch is dropped); the epoch's order is a pure function of (seed, epoch), so a resumed run
    sees the same batches. A whole epoch's covariances are computed in one einsum. With
    batch_size = N every step is full-batch gradient descent on the N pairs.
    """

    def __init__(self, samples: TwoViewSamples, batch_size: int, seed: int) -> None:
        n = len(samples.x)
        if batch_size > n:
            raise RecipeError(
                f"recipe key 'train.batch_size': {batch_size} is larger than data.num_pairs ({n})"
            )
        self.samples, self.batch_size, self.seed = samples, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch = -1
        self._xx = self._yx = self._yy = np.empty(0)

    def _load_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng(mix_seed(self.seed, epoch))
        order = rng.permutation(len(self.samples.x))[: self.per_epoch * self.batch_size]
        shape = (self.per_epoch, self.batch_size, -1)
        x, y = self.samples.x[order].reshape(shape), self.samples.y[order].reshape(shape)
        self._xx = np.einsum("kbi,kbj->kij", x, x) / self.batch_size
        self._yx = np.einsum("kbi,kbj->kij", y, x) / self.batch_size
        self._yy = np.einsum("kbi,kbj->kij", y, y) / self.batch_size
        self._epoch = epoch

    def at(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (Σ̂xx, Σ̂yx, Σ̂yy) of the mini-batch used at ``step``."""
        epoch, index = divmod(step, self.per_epoch)
        if self.batch_size == len(self.samples.x) and self._epoch >= 0:
            epoch = self._epoch  # full batch: every epoch's covariance is the same
        if epoch != self._epoch:
            self._load_epoch(epoch)
        return self._xx[index], self._yx[index], self._yy[index]
