"""Deep linear encoders with a linear predictor (JEPA) or decoder (MAE), and their exact gradients.

Model p has an encoder W̄ = W_L···W_1 (depth L_p, width d) and a head V, so the prediction is
P = V W̄. With second moments Σxx, Σyx = E[y xᵀ], Σyy the two objectives of methods.md §7 are

    JEPA:  ½ E‖V W̄ x − T y‖²  with T = StopGrad(W̄)  (or the EMA of the encoder layers)
    MAE:   ½ E‖V W̄ x − y‖²    (T = I: reconstruct y in input space)

both equal to the closed form  ½ tr(P Σxx Pᵀ) − tr(P Σyxᵀ Tᵀ) + ½ tr(T Σyy Tᵀ)  with T held
fixed, whose gradient in P is  G = P Σxx − T Σyx; the chain rule through the product gives
layer l's gradient (V W_L···W_{l+1})ᵀ G (W_{l-1}···W_1)ᵀ. ``tests/test_linear_gradients.py``
pins these to autograd of the closed form.

Why not autograd here: the JEPA plateaus last 10⁵–10⁶ gradient steps of 2×2 matrices, where
per-op framework overhead is the whole cost. All models (every objective and depth) are stored
as one array of shape (P, S, …) with S = max depth + 1 slots; a model shallower than the
deepest keeps identity layers in its unused slots that receive no update, so one batched step
advances every model. When the covariances are diagonal and the initialisation is aligned
with the feature axes every gradient is diagonal, so the matrices stay diagonal *exactly*;
the ``Diagonal`` algebra then stores only diagonals and products become elementwise (a test
pins diagonal and dense storage to the same trajectory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from jepactl.data.sampling import mix_seed

Objective = Literal["jepa", "mae"]
Init = Literal["aligned", "orthogonal"]


class Dense:
    """Matrices as (…, d, d) arrays."""

    diagonal = False

    @staticmethod
    def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.matmul(a, b)

    @staticmethod
    def t(a: np.ndarray) -> np.ndarray:
        return np.swapaxes(a, -1, -2)

    @staticmethod
    def eye(d: int) -> np.ndarray:
        return np.eye(d)

    @staticmethod
    def frob(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Return tr(a bᵀ) over the trailing matrix axes."""
        return (a * b).sum(axis=(-1, -2))

    @staticmethod
    def dense(a: np.ndarray) -> np.ndarray:
        return a


class Diagonal:
    """Diagonal matrices as (…, d) arrays of their diagonals: products are elementwise."""

    diagonal = True

    @staticmethod
    def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * b

    @staticmethod
    def t(a: np.ndarray) -> np.ndarray:
        return a

    @staticmethod
    def eye(d: int) -> np.ndarray:
        return np.ones(d)

    @staticmethod
    def frob(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(axis=-1)

    @staticmethod
    def dense(a: np.ndarray) -> np.ndarray:
        return a[..., :, None] * np.eye(a.shape[-1])


Algebra = type[Dense] | type[Diagonal]


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """Return a Haar-random d×d orthogonal matrix (QR of a Gaussian with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


@dataclass
class DeepLinearModels:
    """P deep linear models advanced together; ``layers[:, -1]`` is each model's head V."""

    names: tuple[str, ...]
    objectives: tuple[Objective, ...]
    depths: tuple[int, ...]
    layers: np.ndarray  # (P, S, d) diagonal or (P, S, d, d) dense
    ema_layers: np.ndarray | None  # EMA copies of the encoder slots; None = StopGrad(W̄)
    ema_momentum: float
    algebra: Algebra
    learning_rates: np.ndarray  # (P,) each model's fixed GD step size (set per objective)

    @staticmethod
    def create(
        objectives: list[Objective],
        depths: list[int],
        dim: int,
        init: Init,
        init_scale: float,
        seed: int,
        ema_momentum: float,
        diagonal: bool,
        learning_rates: dict[str, float],
    ) -> "DeepLinearModels":
        """Return every (objective, depth) model at a small balanced init with W̄(0) = ε·Q.

        Each encoder layer and the head start at ε^{1/L} times an orthogonal matrix: the
        identity (``aligned``) or a random one (``orthogonal``, the same draws for every
        objective at a depth, so objectives start from the same point). Scaled orthogonal
        layers are balanced (W_{l+1}ᵀW_{l+1} = W_l W_lᵀ = ε^{2/L} I), as the analysis assumes.
        """
        if diagonal and init != "aligned":
            raise ValueError("diagonal storage needs the aligned initialisation")
        algebra: Algebra = Diagonal if diagonal else Dense
        slots = max(depths) + 1
        pairs = [(obj, depth) for obj in objectives for depth in depths]
        eye = algebra.eye(dim)
        layers = np.broadcast_to(eye, (len(pairs), slots) + eye.shape).copy()
        for p, (_, depth) in enumerate(pairs):
            scale = init_scale ** (1.0 / depth)
            rng = np.random.default_rng(mix_seed(seed, depth))
            for slot in list(range(depth)) + [slots - 1]:
                basis = eye if init == "aligned" else random_orthogonal(dim, rng)
                layers[p, slot] = scale * basis
        ema = layers[:, :-1].copy() if ema_momentum > 0 else None
        return DeepLinearModels(
            tuple(f"{o}_L{d}" for o, d in pairs),
            tuple(o for o, _ in pairs),
            tuple(d for _, d in pairs),
            layers,
            ema,
            ema_momentum,
            algebra,
            np.array([learning_rates[o] for o, _ in pairs], dtype=np.float64),
        )

    def __post_init__(self) -> None:
        shape = (len(self.names), self.layers.shape[1]) + (1,) * (self.layers.ndim - 2)
        # 1 for the slots a model trains (its L encoder layers and its head), 0 for padding.
        self.active = np.zeros(shape)
        for p, depth in enumerate(self.depths):
            self.active[p, :depth] = 1.0
            self.active[p, -1] = 1.0
        mask_shape = (len(self.names),) + (1,) * (self.layers.ndim - 2)
        self.is_jepa = np.array([o == "jepa" for o in self.objectives], dtype=np.float64).reshape(
            mask_shape
        )
        self._mae_target = (1.0 - self.is_jepa) * self.algebra.eye(self.layers.shape[-1])
        self._step_scale = self.learning_rates.reshape(mask_shape)[:, None] * self.active

    # ------------------------------------------------------------------ forward quantities

    def encoders(self) -> np.ndarray:
        """Return W̄ = W_L···W_1 for every model, (P, …)."""
        return _product(self.layers[:, :-1], self.algebra)

    def targets(self, encoders: np.ndarray | None = None) -> np.ndarray:
        """Return T (no gradient flows through it): the JEPA target encoder, or I for MAE."""
        if self.ema_layers is not None:
            target_encoders = _product(self.ema_layers, self.algebra)
        else:
            target_encoders = self.encoders() if encoders is None else encoders
        return self.is_jepa * target_encoders + self._mae_target

    def losses(self, xx: np.ndarray, yx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Return each model's objective ½ E‖V W̄ x − T y‖² in closed form, (P,)."""
        alg = self.algebra
        encoders = self.encoders()
        pred, target = alg.mm(self.layers[:, -1], encoders), self.targets(encoders)
        return (
            0.5 * alg.frob(alg.mm(pred, xx), pred)
            - alg.frob(alg.mm(pred, alg.t(yx)), target)
            + 0.5 * alg.frob(alg.mm(target, yy), target)
        )

    def gradients(self, xx: np.ndarray, yx: np.ndarray) -> np.ndarray:
        """Return d(objective)/d(layers) with the target held fixed, shaped like ``layers``."""
        if self.algebra.diagonal:
            return self._diagonal_gradients(xx, yx)
        alg, layers = self.algebra, self.layers
        slots = layers.shape[1]
        below = [layers[:, 0]]  # below[l] = W_l···W_1 (slot l included)
        for slot in range(1, slots):
            below.append(alg.mm(layers[:, slot], below[-1]))
        target = self.targets(below[-2])
        grad_pred = alg.mm(below[-1], xx) - alg.mm(target, yx)  # G = P Σxx − T Σyx
        grads = [np.empty(0)] * slots
        back = grad_pred  # (W_S···W_{l+1})ᵀ G, built from the top down
        for slot in range(slots - 1, 0, -1):
            grads[slot] = alg.mm(back, alg.t(below[slot - 1]))
            back = alg.mm(alg.t(layers[:, slot]), back)
        grads[0] = back
        return np.stack(grads, axis=1)

    def _diagonal_gradients(self, xx: np.ndarray, yx: np.ndarray) -> np.ndarray:
        """The same chain rule for diagonal layers: G times the product of all other layers.

        Prefix and suffix cumulative products give every "all but slot l" product in a few
        array ops (no division, so a layer at exactly 0 is fine); this halves the step time,
        which is what the long JEPA plateaus cost.
        """
        layers = self.layers
        below = np.cumprod(layers, axis=1)  # below[:, l] = W_l···W_1
        above = np.cumprod(layers[:, ::-1], axis=1)[:, ::-1]  # above[:, l] = V···W_l
        others = np.empty_like(layers)
        others[:, 0] = above[:, 1]
        others[:, 1:-1] = below[:, :-2] * above[:, 2:]
        others[:, -1] = below[:, -2]
        target = self.targets(below[:, -2])
        grad_pred = below[:, -1] * xx - target * yx  # G = P Σxx − T Σyx
        return grad_pred[:, None] * others

    # ------------------------------------------------------------------ one step

    def descend(self, xx: np.ndarray, yx: np.ndarray) -> None:
        """Take one gradient-descent step on every model, then move the EMA target."""
        self.layers -= self._step_scale * self.gradients(xx, yx)
        if self.ema_layers is not None:
            m = self.ema_momentum
            self.ema_layers *= m
            self.ema_layers += (1.0 - m) * self.layers[:, :-1]


def _product(stack: np.ndarray, alg: Algebra) -> np.ndarray:
    """Return stack[:, -1] ··· stack[:, 0] (later slots act after earlier ones)."""
    out = stack[:, 0]
    for slot in range(1, stack.shape[1]):
        out = alg.mm(stack[:, slot], out)
    return out
