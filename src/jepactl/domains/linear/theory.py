"""Gradient-flow predictions for the aligned, balanced initialisation (methods.md §7).

With every encoder layer and the head at the same scalar a per feature (W̄ = a^L), the
dynamics decouple into one ODE per feature:

    JEPA:  ȧ = λ a^{2L} (ρ − a)          fixed point a = ρ,          W̄* = ρ^L
    MAE:   ȧ = λ a^L (ρ − a^{L+1})       fixed point a^{L+1} = ρ,    W̄* = ρ^{L/(L+1)}

from a(0) = ε^{1/L}. The critical time t* (W̄ reaches half of W̄*) is ∫ da / ȧ(a) from a(0) to
(W̄*/2)^{1/L}. These are the numbers methods.md tabulates; the simulation's gradient descent
should reproduce them up to its step size.
"""

from __future__ import annotations

import math

import numpy as np


def fixed_point(objective: str, rho: float, depth: int) -> float:
    """Return the encoder's final weight W̄* on a feature of influence ρ."""
    return rho**depth if objective == "jepa" else rho ** (depth / (depth + 1))


def ode_critical_time(
    objective: str, lam: float, rho: float, depth: int, init_scale: float, points: int = 20001
) -> float:
    """Return t* of the per-feature ODE by quadrature in log a; NaN if a(0) is already past it.

    The substitution u = ln a makes the integrand a / ȧ(a) smooth over the many decades the
    plateau spans, so a trapezoid rule on a uniform grid in u is accurate to ~1e-6 relative.
    """
    start = init_scale ** (1.0 / depth)
    half = (fixed_point(objective, rho, depth) / 2.0) ** (1.0 / depth)
    if start >= half:
        return math.nan
    a = np.exp(np.linspace(math.log(start), math.log(half), points))
    if objective == "jepa":
        rate = lam * a ** (2 * depth) * (rho - a)
    else:
        rate = lam * a**depth * (rho - a ** (depth + 1))
    return float(np.trapezoid(a / rate, np.log(a)))
