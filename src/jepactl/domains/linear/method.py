"""Deep linear JEPA vs MAE: which features each objective learns first (methods.md §7).

Littwin et al. 2024 ("How JEPA Avoids Noisy Features", NeurIPS) show that with deep linear
encoders both JEPA and MAE learn features greedily in their covariance λ, but only JEPA is
greedy in their influence ρ (how well one view's feature predicts the other's), and more so as
the encoder deepens; when noisy features have high λ and low ρ the learning order flips.

This method is an analysis, not SGD over a data loader, so it provides ``run_pretrain`` (the
shared trainer is not used): ``jepactl pretrain linear/linear-jepa-mae`` simulates gradient descent
on every (objective, depth) at once and writes the run folder. The machinery is in
``jepactl.domains.linear``; this module holds the recipe and the CLI hooks.

Its ``SPEC`` leaves ``build`` / ``pretrain_data`` / ``eval_data`` / ``has_split`` None (no torch
module, no files): a command that needs one gets the spec's user error, which ends with ``note``
(what to run instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jepactl.methods.base import MethodSpec
from jepactl.methods.probe_request import ProbeRequest
from jepactl.recipe import Recipe


@dataclass
class LinearDataConfig:
    """The two-view linear model x_i = z_i + σ_i ξ, y_i = z_i + σ_i ξ' (generated, no files)."""

    path: str = ""  # must stay empty: the data are generated in the run from the seed
    mode: Literal["population", "samples"] = "population"  # exact gradients | N pairs, batches
    features_from: Literal["lambda_rho", "signal_noise"] = "lambda_rho"
    names: list[str] = field(default_factory=lambda: ["noisy", "influential"])
    lambdas: list[float] = field(default_factory=lambda: [4.0, 1.0])  # λ_i = E[x_i²]
    rhos: list[float] = field(default_factory=lambda: [0.3, 0.9])  # ρ_i = E[y_i x_i]/E[x_i²]
    signal_std: list[float] = field(default_factory=list)  # s_i (features_from: signal_noise)
    noise_std: list[float] = field(default_factory=list)  # σ_i (features_from: signal_noise)
    num_pairs: int = 10000  # samples mode: N pairs drawn once from `seed`
    seed: int = 0


@dataclass
class LinearModelConfig:
    """Deep linear encoder W̄ = W_L···W_1 (width = number of features) + linear head V."""

    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    init: Literal["aligned", "orthogonal"] = "aligned"  # layers ε^{1/L}·I, or ·random orthogonal
    init_scale: float = 1.0e-3  # ε: W̄(0) = ε·Q (small, balanced)


@dataclass
class LinearLossConfig:
    # jepa: ½E‖VW̄x − StopGrad(W̄)y‖² (EMA target if ema.momentum > 0); mae: ½E‖VW̄x − y‖²
    objectives: list[Literal["jepa", "mae"]] = field(default_factory=lambda: ["jepa", "mae"])


@dataclass
class LinearOptimConfig:
    """Plain gradient descent with a fixed learning rate per objective; time t = step × lr.

    Why two: JEPA's plateaus last 10⁴–10⁵ time units and its curvature at the fixed point
    (~λρ^{2L}) is small, so it takes large steps; MAE's critical times are a few time units, so
    small steps keep its Euler error near 1%. Orders are compared within an objective only, on
    each one's own gradient-flow clock. Dense runs (samples mode, orthogonal init) need a
    smaller JEPA step: off-diagonal directions couple one feature's λ with another's weight
    (curvature up to max λ · max ρ²), and jepa_lr = 1 diverges there for experiment (c).
    """

    jepa_lr: float = 1.0
    mae_lr: float = 0.01


@dataclass
class LinearEmaConfig:
    momentum: float = 0.0  # JEPA target: 0 = StopGrad of the same weights (the paper), >0 = EMA


@dataclass
class LinearTrainConfig:
    max_steps: int = 120_000  # JEPA at lr 1: t = 120,000 (L = 4, ε = 1e-3 settles by ~90,000)
    batch_size: int = 100  # samples mode: pairs per mini-batch
    grad_accum: int = 1  # samples mode: mini-batches averaged per step (= batch × accum pairs)
    seed: int = 0  # random orthogonal init and the mini-batch order
    log_every: int = 5000  # records every N steps, besides the log-spaced ones
    log_points: int = 2000  # log-spaced records between step 1 and max_steps
    checkpoint_every: int = 100_000


@dataclass
class LinearProbeConfig:
    # R² of the clean z from the top-k principal components of the encoder output W̄x.
    components: int = 1


@dataclass
class LinearReportConfig:
    ratio_of: list[str] = field(default_factory=lambda: ["noisy", "influential"])  # t*_a / t*_b


@dataclass
class NotApplicable:
    """A section of the shared recipe that this analysis has no use for (no keys)."""


@dataclass
class LinearDynamicsRecipe(Recipe):
    domain: str = "linear"
    method: str = "linear-jepa-mae"
    data: LinearDataConfig = field(default_factory=LinearDataConfig)
    model: LinearModelConfig = field(default_factory=LinearModelConfig)
    loss: LinearLossConfig = field(default_factory=LinearLossConfig)
    optim: LinearOptimConfig = field(default_factory=LinearOptimConfig)
    ema: LinearEmaConfig = field(default_factory=LinearEmaConfig)
    train: LinearTrainConfig = field(default_factory=LinearTrainConfig)
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    report: LinearReportConfig = field(default_factory=LinearReportConfig)
    finetune: NotApplicable = field(default_factory=NotApplicable)


def run_pretrain(
    recipe: LinearDynamicsRecipe, run_dir: Path, resume: bool = False, quiet: bool = False
) -> dict:
    """Simulate every (objective, depth); return the critical-time-ratio table and file paths."""
    from jepactl.domains.linear.experiment import run_experiment

    return run_experiment(recipe, Path(run_dir), resume=resume, quiet=quiet)


def run_probe(request: ProbeRequest, recipe: LinearDynamicsRecipe) -> dict:
    """Return each model's probe R² (z from the top-k components of W̄x) at the run's end."""
    from jepactl.domains.linear.experiment import probe_run

    return probe_run(request, recipe)


SPEC = MethodSpec(
    "linear-jepa-mae",
    LinearDynamicsRecipe,
    build=None,
    pretrain_data=None,
    eval_data=None,
    has_split=None,
    run_pretrain=run_pretrain,
    run_probe=run_probe,
    note="it is an analysis run by `jepactl pretrain linear/linear-jepa-mae`; read its run "
    "folder's summary.json or `jepactl probe RUN`",
    labels_from="its probe regresses the latents its data was generated from; run "
    "`jepactl probe RUN` without --labels",
)
