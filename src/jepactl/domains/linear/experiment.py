"""One run of the JEPA-vs-MAE analysis: recipe -> simulation -> run folder and result table.

Writes into the run folder: ``recipe.yaml`` and ``env.json`` (as every run), ``metrics.jsonl``
(one object per record: time, and per model its loss, per-feature gains and probe R²),
``checkpoints/step-*.safetensors``, ``summary.json`` (critical times, final values, the
gradient-flow predictions beside them) and ``weights_over_time.png``. Prints the
critical-time-ratio table (objective × depth) on stderr and returns it as flat keys
(``jepa_L3_ratio``) for the CLI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

from jepactl.checkpoint import (
    atomic_write_text,
    find_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from jepactl.domains.linear.deep_linear import DeepLinearModels
from jepactl.domains.linear.features import (
    FeatureSet,
    MiniBatchMoments,
    TwoViewSamples,
    population_moments,
)
from jepactl.domains.linear.figure import OBJECTIVE_TITLES, plot_weights_over_time
from jepactl.domains.linear.measure import critical_times, learning_order, probe_r2
from jepactl.domains.linear.simulate import Simulation, record_schedule
from jepactl.domains.linear.theory import fixed_point, ode_critical_time
from jepactl.errors import RecipeError, UserError
from jepactl.methods.probe_request import ProbeRequest
from jepactl.progress import TrainProgress
from jepactl.runs import CHECKPOINT_DIR, write_run_files

if TYPE_CHECKING:
    from jepactl.domains.linear.method import LinearDynamicsRecipe

FIGURE = "weights_over_time.png"
SUMMARY = "summary.json"


def feature_set(recipe: "LinearDynamicsRecipe") -> FeatureSet:
    """Return the recipe's features, checking every key the analysis reads."""
    data, model = recipe.data, recipe.model
    if data.path:
        raise RecipeError(
            f"recipe key 'data.path': method 'linear-jepa-mae' generates its data "
            f"from data.seed and reads no files, got '{data.path}' (drop --data)"
        )
    if not data.names or len(set(data.names)) != len(data.names):
        raise RecipeError(f"recipe key 'data.names': need distinct names, got {data.names}")
    if data.features_from == "lambda_rho":
        features = FeatureSet.from_lambda_rho(data.names, data.lambdas, data.rhos)
    else:
        features = FeatureSet.from_signal_noise(data.names, data.signal_std, data.noise_std)
    if not model.depths or min(model.depths) < 1 or len(set(model.depths)) != len(model.depths):
        raise RecipeError(
            f"recipe key 'model.depths': need distinct depths ≥ 1, got {model.depths}"
        )
    objectives = recipe.loss.objectives
    if not objectives or len(set(objectives)) != len(objectives):
        raise RecipeError(
            f"recipe key 'loss.objectives': need distinct objectives, got {objectives}"
        )
    checks = [
        ("model.init_scale", model.init_scale > 0),
        ("optim.jepa_lr", recipe.optim.jepa_lr > 0),
        ("optim.mae_lr", recipe.optim.mae_lr > 0),
        ("ema.momentum", 0 <= recipe.ema.momentum < 1),
        ("probe.components", recipe.probe.components >= 1),
        ("train.log_points", recipe.train.log_points >= 2),
        ("data.num_pairs", data.num_pairs >= 2),
    ]
    for key, ok in checks:
        if not ok:
            raise RecipeError(
                f"recipe key '{key}' is out of range "
                "(init_scale, lr > 0; 0 ≤ momentum < 1; components ≥ 1; "
                "log_points, num_pairs ≥ 2)"
            )
    ratio = recipe.report.ratio_of
    if len(ratio) != 2 or any(name not in features.names for name in ratio):
        raise RecipeError(
            f"recipe key 'report.ratio_of': need two names from data.names "
            f"{list(features.names)}, got {ratio}"
        )
    return features


def learning_rates(recipe: "LinearDynamicsRecipe") -> dict[str, float]:
    return {"jepa": recipe.optim.jepa_lr, "mae": recipe.optim.mae_lr}


def build_simulation(recipe: "LinearDynamicsRecipe") -> tuple[Simulation, FeatureSet]:
    """Return the simulation at step 0 and the features, from a checked recipe."""
    features = feature_set(recipe)
    population = population_moments(features)
    # Diagonal storage is exact only when every gradient stays diagonal (see deep_linear).
    diagonal = recipe.data.mode == "population" and recipe.model.init == "aligned"
    models = DeepLinearModels.create(
        list(recipe.loss.objectives),
        list(recipe.model.depths),
        features.dim,
        recipe.model.init,
        recipe.model.init_scale,
        recipe.train.seed,
        recipe.ema.momentum,
        diagonal,
        learning_rates(recipe),
    )
    if recipe.data.mode == "population":
        train = population if diagonal else population.dense()
        loss_moments = population
    else:
        samples = TwoViewSamples.draw(features, recipe.data.num_pairs, recipe.data.seed)
        batch = recipe.train.batch_size * recipe.train.grad_accum
        train = MiniBatchMoments(samples, batch, recipe.train.seed)
        loss_moments = samples.moments()
    sim = Simulation(models, train, loss_moments, population, recipe.probe.components)
    return sim, features


def load_simulation_state(sim: Simulation, checkpoint_dir: Path) -> None:
    """Load the newest readable checkpoint into ``sim``; UserError when it is another run's."""
    state, path = load_latest_checkpoint(checkpoint_dir)
    try:
        sim.load_state(state)
    except (ValueError, KeyError) as err:
        raise UserError(f"checkpoint '{path}' does not match the recipe: {err}") from None


def run_experiment(
    recipe: "LinearDynamicsRecipe",
    run_dir: Path,
    resume: bool = False,
    quiet: bool = False,
    stop_at: int | None = None,
) -> dict:
    """Run (or resume) the analysis into ``run_dir``; return the flat result table."""
    from jepactl.train import StopFlag

    sim, features = build_simulation(recipe)
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    if resume:
        if not find_checkpoints(checkpoint_dir):
            raise UserError(f"cannot resume: '{checkpoint_dir}' holds no checkpoint")
        load_simulation_state(sim, checkpoint_dir)
    elif find_checkpoints(checkpoint_dir):
        raise UserError(
            f"run folder '{run_dir}' already has a checkpoint; "
            "pass --resume to continue it or choose another --out"
        )
    write_run_files(run_dir, recipe, world_size=1, device="cpu")

    cfg = recipe.train
    schedule = record_schedule(cfg.max_steps, cfg.log_points, cfg.log_every)
    progress = TrainProgress(cfg.max_steps, sim.step, quiet, title="linear dynamics")
    last_line = [sim.step]
    rates = learning_rates(recipe)

    def on_progress(step: int) -> None:
        progress.advance(step)
        if not progress.live and step - last_line[0] >= cfg.max_steps // 10:
            last_line[0] = step
            clocks = "  ".join(
                f"t_{o} = {step * lr:.6g}" for o, lr in rates.items() if o in recipe.loss.objectives
            )
            progress.message(f"[linear dynamics] step {step}/{cfg.max_steps}  {clocks}")

    def save() -> None:
        save_checkpoint(checkpoint_dir, sim.step, sim.state(), keep=recipe.checkpoint.keep)
        lines = sim.metrics_lines(features.names)
        atomic_write_text(
            "".join(json.dumps(line) + "\n" for line in lines), run_dir / "metrics.jsonl"
        )

    # A step size too large for a model overflows to inf/nan; that is reported per model
    # ("diverged") rather than as numpy warnings.
    with StopFlag() as flag, np.errstate(over="ignore", invalid="ignore"):
        finished = sim.run(
            cfg.max_steps,
            schedule,
            cfg.checkpoint_every,
            save,
            on_progress,
            lambda: flag.raised,
            stop_at=stop_at,
        )
    progress.close()
    if not finished:
        return {
            "run": str(run_dir),
            "finished": False,
            "step": sim.step,
            "resume": f"jepactl pretrain {run_dir} --resume",
        }
    summary = summarise(sim, features, recipe)
    atomic_write_text(json.dumps(summary, indent=2) + "\n", run_dir / SUMMARY)
    figure = run_dir / FIGURE
    plot_figure(sim, features, recipe, summary, figure)
    if not quiet:
        print_ratio_table(summary, Console(stderr=True))
    return result_table(summary, run_dir, sim.step)


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def _clean(value: float) -> float | None:
    """Return a JSON-safe float: None for nan/inf (undefined or diverged)."""
    return None if value is None or not math.isfinite(value) else float(value)


def summarise(sim: Simulation, features: FeatureSet, recipe: "LinearDynamicsRecipe") -> dict:
    """Return per model: critical times, finals, learning order, probe, and the theory beside."""
    traj = sim.trajectory
    gains = np.asarray(traj.gains)
    crit = critical_times(sim.times(), gains)
    first, second = (features.names.index(n) for n in recipe.report.ratio_of)
    # The ODEs assume aligned, balanced layers and a stop-gradient target (methods.md §7).
    theory = recipe.model.init == "aligned" and recipe.ema.momentum == 0
    models = {}
    for p, name in enumerate(sim.models.names):
        objective, depth = sim.models.objectives[p], sim.models.depths[p]
        diverged = not np.all(np.isfinite(gains[-1, p]))
        entry = {
            "objective": objective,
            "depth": depth,
            "critical_time": {f: _clean(crit[p, i]) for i, f in enumerate(features.names)},
            "final": {f: _clean(gains[-1, p, i]) for i, f in enumerate(features.names)},
            "ratio": _clean(crit[p, first] / crit[p, second]),
            "order": (
                f"diverged: lower optim.{objective}_lr"
                if diverged
                else learning_order(crit[p], features.names)
            ),
            "probe_r2": _clean(traj.probe[-1][p]),
            "final_loss": _clean(traj.losses[-1][p]),
        }
        if theory:
            ode = [
                ode_critical_time(objective, lam, rho, depth, recipe.model.init_scale)
                for lam, rho in zip(features.lambdas, features.rhos)
            ]
            entry["theory_final"] = {
                f: fixed_point(objective, rho, depth)
                for f, rho in zip(features.names, features.rhos)
            }
            entry["ode_critical_time"] = {f: _clean(t) for f, t in zip(features.names, ode)}
            entry["ode_ratio"] = _clean(ode[first] / ode[second])
        models[name] = entry
    identity = np.eye(features.dim)[None]
    return {
        "recipe": recipe.name,
        "mode": recipe.data.mode,
        "init": recipe.model.init,
        "init_scale": recipe.model.init_scale,
        "steps": sim.step,
        "learning_rate": learning_rates(recipe),
        "time": {o: sim.step * lr for o, lr in learning_rates(recipe).items()},
        "ratio_of": list(recipe.report.ratio_of),
        "features": {
            f: {"lambda": float(lam), "rho": float(rho)}
            for f, lam, rho in zip(features.names, features.lambdas, features.rhos)
        },
        "probe_components": recipe.probe.components,
        "input_probe_r2": float(probe_r2(identity, sim.probe_eval, recipe.probe.components)[0]),
        "models": models,
    }


def plot_figure(
    sim: Simulation, features: FeatureSet, recipe: "LinearDynamicsRecipe", summary: dict, path: Path
) -> None:
    traj = sim.trajectory
    times = sim.times()
    names = sim.models.names
    crit = np.array(
        [
            [np.nan if v is None else v for v in summary["models"][n]["critical_time"].values()]
            for n in names
        ]
    )
    ratios = np.array(
        [
            np.nan if summary["models"][n]["ratio"] is None else summary["models"][n]["ratio"]
            for n in names
        ]
    )
    a, b = recipe.report.ratio_of
    labels = [
        f"{f} (λ={lam:g}, ρ={rho:g})"
        for f, lam, rho in zip(features.names, features.lambdas, features.rhos)
    ]
    title = (
        f"{recipe.name}: encoder weight on each feature over time "
        f"({recipe.data.mode}, {recipe.model.init} init, ε={recipe.model.init_scale:g}, "
        f"lr JEPA {recipe.optim.jepa_lr:g} / MAE {recipe.optim.mae_lr:g})"
    )
    plot_weights_over_time(
        path,
        times,
        np.asarray(traj.gains),
        sim.models.objectives,
        sim.models.depths,
        labels,
        crit,
        f"t*{a}/t*{b}",
        ratios,
        title,
    )


def print_ratio_table(summary: dict, console: Console) -> None:
    """Print t*_a/t*_b per objective (rows) and depth (columns), with the ODE's beside."""
    a, b = summary["ratio_of"]
    models = summary["models"].values()
    depths = sorted({m["depth"] for m in models})
    table = Table(title=f"critical-time ratio t*{a} / t*{b}  (< 1: {a} learned first)")
    table.add_column("objective")
    for depth in depths:
        table.add_column(f"L={depth}", justify="right")

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for objective in OBJECTIVE_TITLES:
        row = {m["depth"]: m for m in models if m["objective"] == objective}
        if not row:
            continue
        title = OBJECTIVE_TITLES[objective]
        table.add_row(f"{title} (gradient descent)", *(fmt(row[d]["ratio"]) for d in depths))
        if "ode_ratio" in next(iter(row.values())):
            table.add_row(
                f"{title} (gradient-flow ODE)", *(fmt(row[d]["ode_ratio"]) for d in depths)
            )
    console.print(table)


def result_table(summary: dict, run_dir: Path, step: int) -> dict:
    """Return the flat dict the CLI prints: ratios, learning orders, probe R², file paths."""
    a, b = summary["ratio_of"]
    out: dict = {"run": str(run_dir), "finished": True, "step": step}
    out.update({f"{objective}_time": t for objective, t in summary["time"].items()})
    out["ratio"] = f"t*{a} / t*{b}"
    for name, m in summary["models"].items():
        out[f"{name}_ratio"] = m["ratio"]
    for name, m in summary["models"].items():
        out[f"{name}_order"] = m["order"]
    for name, m in summary["models"].items():
        out[f"{name}_probe_r2"] = m["probe_r2"]
    out["input_probe_r2"] = summary["input_probe_r2"]
    out["figure"] = str(run_dir / FIGURE)
    out["metrics"] = str(run_dir / "metrics.jsonl")
    out["summary"] = str(run_dir / SUMMARY)
    return out


# --------------------------------------------------------------------------------------------
# jepactl probe RUN
# --------------------------------------------------------------------------------------------


def probe_run(request: ProbeRequest, recipe: "LinearDynamicsRecipe") -> dict:
    """Return probe R² per model from the run's last checkpoint (or its init: --random-init)."""
    request.refuse_options(
        *("--data", "--test", "--shots", "--target", "--task", "--head", "--which"),
        "--labels-fraction",
        probe="the linear-jepa-mae probe",
        why="it is computed in closed form from the population covariances "
        "(set probe.components=K to change it)",
    )
    sim, _ = build_simulation(recipe)
    if not request.random_init:
        checkpoint_dir = Path(request.run) / CHECKPOINT_DIR
        if not find_checkpoints(checkpoint_dir):
            raise UserError(f"run folder '{request.run}' has no checkpoint (in {CHECKPOINT_DIR}/)")
        load_simulation_state(sim, checkpoint_dir)
    encoders = sim.models.algebra.dense(sim.models.encoders())
    k = recipe.probe.components
    r2 = probe_r2(encoders, sim.probe_eval, k)
    out: dict = {"run": str(request.run), "step": sim.step, "probe_components": k}
    for name, value in zip(sim.models.names, r2):
        out[f"{name}_probe_r2"] = float(value)
    out["input_probe_r2"] = float(probe_r2(np.eye(encoders.shape[-1])[None], sim.probe_eval, k)[0])
    return out
