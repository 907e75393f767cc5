"""``jepactl probe RUN`` on an ACT-JEPA run: closed-loop rollouts and the world-model probe.

* **Rollouts** (rollout.py): ``--rollouts N`` episodes of the policy in ``gym_pusht/PushT-v0``
  (default ``probe.rollouts``; 0 skips them); success rate, coverage, episode length; GIFs in
  ``RUN/rollouts/``. ``probe.policy=random`` or ``nearest_demo`` scores a baseline instead.
* **World model:** from the frozen encoder's latent of o_t (``--which``, default the context
  encoder the policy acts with), a ridge regression predicts the standardised whole future
  states s_{t+1}..s_{t+k} (the block's pose too when the policy sees only the agent's);
  fitted on frames of the training episodes (L2 chosen on a tenth of them), scored by the mean
  squared error on the held-out episodes' real (not padded) future steps.
  The same regression from the observed current state is reported beside it
  (``future_state_mse_from_state``), so a latent has to beat its own input to count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from jepactl.domains.policy.demos import DemoWindows, Normaliser, collate_windows, open_demos
from jepactl.domains.policy.rollout import (
    RolloutConfig,
    model_policy,
    nearest_demo_policy,
    random_policy,
    run_rollouts,
    summarise,
)
from jepactl.errors import UserError
from jepactl.evaluate.features import default_device
from jepactl.evaluate.seeds import aggregate
from jepactl.evaluate.source import open_method
from jepactl.methods.probe_request import ProbeRequest
from jepactl.recipe import ProbeConfig


@dataclass
class PolicyProbeConfig(RolloutConfig, ProbeConfig):
    which: Literal["target", "context"] = "context"
    probe_frames: int = 8000  # training frames the world-model regression is fitted on (seeded)


@torch.no_grad()
def latents(encoder, windows: DemoWindows, frames: np.ndarray, batch_size: int):
    """Return (latents (N, D), observed states (N, S)) of ``windows[frames]``."""
    device = default_device()
    encoder.to(device).eval()
    found, states = [], []
    for start in range(0, len(frames), batch_size):
        batch = collate_windows([windows[int(i)] for i in frames[start : start + batch_size]])
        image = batch.get("image")
        _, summary = encoder(batch["state"].to(device), None if image is None else image.to(device))
        found.append(summary.float().cpu())
        states.append(batch["state"])
    return torch.cat(found), torch.cat(states)


def future_states(windows: DemoWindows, frames: np.ndarray, mean, std):
    """Return the whole state at t+1..t+k (N, k, S_all), standardised, and which are real."""
    futures, valid = [], []
    for index in frames:
        _, _, future, real = windows.future_frames(int(windows.frames[index]))
        futures.append(windows.demos.all_states[future])
        valid.append(real)
    future = (torch.from_numpy(np.stack(futures)) - mean) / std
    return future, torch.from_numpy(np.stack(valid))


def ridge(x: torch.Tensor, y: torch.Tensor, strength: float) -> torch.Tensor:
    """Return W (D + 1, T) minimising |[x, 1] W - y|² + strength |W[:-1]|² (closed form)."""
    xb = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    penalty = torch.eye(xb.shape[1], dtype=torch.float64) * strength
    penalty[-1, -1] = 0.0
    return torch.linalg.solve(xb.T @ xb + penalty, xb.T @ y.double()).float()


def future_error(train, test, seed: int) -> dict[str, float]:
    """Fit ridge on ``train`` (x, future, valid), L2 picked on a tenth; MSE on ``test``."""
    (x, future, _), (tx, tfuture, tvalid) = train, test
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x, tx = (x - mean) / std, (tx - mean) / std
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    held, fit = order[: max(1, len(x) // 10)], order[max(1, len(x) // 10) :]
    y = future.flatten(1)
    best, best_error = 1.0, float("inf")
    for strength in (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0):
        w = ridge(x[fit], y[fit], strength)
        error = float(
            ((torch.cat([x[held], torch.ones(len(held), 1)], 1) @ w - y[held]) ** 2).mean()
        )
        if error < best_error:
            best, best_error = strength, error
    w = ridge(x, y, best)
    predicted = (torch.cat([tx, torch.ones(len(tx), 1)], 1) @ w).reshape(tfuture.shape)
    squared = ((predicted - tfuture) ** 2).mean(-1)  # (N, k)
    valid = tvalid.float()
    return {
        "mse": float((squared * valid).sum() / valid.sum()),
        "next": float((squared[:, 0] * valid[:, 0]).sum() / valid[:, 0].sum()),
        "last": float((squared[:, -1] * valid[:, -1]).sum() / valid[:, -1].sum().clamp_min(1)),
    }


def world_model_probe(method, recipe, data: str, which: str, cfg, seed: int) -> dict:
    demos = open_demos(data, recipe.data)
    fitted = recipe.data.fitted
    # No future frames: the probe encodes o_t only.
    train = DemoWindows(demos, fitted["train_episodes"], recipe.data, fitted, future_images=False)
    test = DemoWindows(demos, fitted["val_episodes"], recipe.data, fitted, future_images=False)
    if len(test) == 0:
        raise UserError("the world-model probe needs held-out episodes: data.val_fraction is 0")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.permutation(len(train))[: cfg.probe_frames])
    tested = np.arange(len(test))
    # Standardised with the training episodes' statistics (those of the observed columns are
    # data.fitted's, so a state-only run's targets are exactly its normalised future states).
    seen = torch.from_numpy(demos.all_states[train.frames])
    mean, std = seen.mean(0), seen.std(0, correction=0).clamp_min(1e-6)
    future, valid = future_states(train, picked, mean, std)
    tfuture, tvalid = future_states(test, tested, mean, std)
    encoder = method.encoder(which)
    lat, state = latents(encoder, train, picked, cfg.batch_size)
    tlat, tstate = latents(encoder, test, tested, cfg.batch_size)
    from_latent = future_error((lat, future, valid), (tlat, tfuture, tvalid), seed)
    from_state = future_error((state, future, valid), (tstate, tfuture, tvalid), seed)
    return {
        "future_state_mse": from_latent["mse"],
        "future_state_mse_next": from_latent["next"],
        "future_state_mse_last": from_latent["last"],
        "future_state_mse_from_state": from_state["mse"],
    }


def run_probe(request: ProbeRequest, recipe) -> dict:
    """Return rollout scores and future-state errors (mean over ``--seeds`` for the probe)."""
    request.refuse_options(
        "--test",
        "--shots",
        "--target",
        "--task",
        "--head",
        "--labels-fraction",
        "--labels",
        "--views",
        probe="the policy probe",
        why="it scores rollouts (--rollouts N) and the future-state probe on held-out episodes",
    )
    cfg: PolicyProbeConfig = recipe.probe
    which = request.which or cfg.which
    if which not in ("target", "context"):
        raise UserError(f"--which must be 'target' or 'context', got '{which}'")
    rollouts = cfg.rollouts if request.rollouts is None else request.rollouts
    if rollouts < 0:
        raise UserError(f"--rollouts must be 0 or more, got {rollouts}")
    data = request.data or recipe.data.path
    if data is None:
        raise UserError("no demonstrations: pass --data PATH (the run's data by default)")
    method, tag = open_method(
        request.run, recipe, request.random_init, "the policy probe", request.checkpoint
    )
    device = default_device()
    method.to(device).eval()
    report: dict = {"data": data, "encoder": f"{tag}-{which}"}
    if rollouts:
        settings = RolloutConfig(**{k: getattr(cfg, k) for k in RolloutConfig.__dataclass_fields__})
        settings.rollouts = rollouts
        chunk, observation = recipe.data.chunk, recipe.data.observation
        if cfg.policy == "random":
            policy = random_policy(chunk)
        elif cfg.policy == "nearest_demo":
            demos = open_demos(data, recipe.data)
            episodes = np.asarray(recipe.data.fitted["train_episodes"])
            policy = nearest_demo_policy(demos, episodes, chunk, observation)
        else:
            normaliser = Normaliser(recipe.data.fitted)
            policy = model_policy(method, normaliser, observation, recipe.data.state_dims, device)
        out = None if request.random_init else Path(request.run) / "rollouts"
        report |= {"policy": cfg.policy, "rollouts": rollouts}
        report |= summarise(run_rollouts(policy, settings, chunk, observation, out))
    rows = [
        world_model_probe(method, recipe, data, which, cfg, seed)
        for seed in range(cfg.seed, cfg.seed + request.seeds)
    ]
    return {**report, **aggregate(rows)}
