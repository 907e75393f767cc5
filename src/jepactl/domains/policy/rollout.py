"""Closed-loop evaluation of a policy in the Push-T simulator (``gym-pusht``).

``rollouts`` episodes start from fixed seeds (``first_seed``, ``first_seed + 1``, ...), so two
evaluations of one policy see the same starts and a run is comparable with another. All
episodes step together: one batched policy query per step serves every environment still
running, which makes 50 episodes of 300 steps a matter of seconds on a CPU.

Acting (ACT): with ``temporal_ensemble`` the policy is queried every step and the action for
step t is the weighted mean of every chunk's prediction for t, weights exp(-m i) with i = 0 the
oldest prediction (ACT's m = 0.01); without it a chunk is queried every ``execute`` steps and
its first ``execute`` actions are played open-loop. Baseline policies: ``random`` (uniform
targets on the board) and ``nearest_demo`` (replay the actions of the training demonstration
whose first state is nearest the episode's first state).

Reported: success rate (the episode reaches ``success_coverage`` of the goal region), coverage
(per episode its maximum, averaged and maxed over episodes) and mean episode length. The first
``videos`` episodes are saved as GIFs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from jepactl.errors import UserError

ROBOT_EXTRA = 'pip install "jepactl[robot]"'


@dataclass
class RolloutConfig:
    """The recipe's ``probe`` keys for rollouts (the defaults of ACT and gym-pusht)."""

    rollouts: int = 50
    first_seed: int = 100_000  # far from the seeds demonstrations are usually recorded with
    max_steps: int = 300  # gym-pusht's episode limit
    temporal_ensemble: bool = True
    ensemble_decay: float = 0.01  # ACT's m
    execute: int = 8  # actions played per query without the ensemble (Diffusion Policy's)
    success_coverage: float = 0.95
    videos: int = 3
    policy: Literal["model", "random", "nearest_demo"] = "model"


def make_envs(count: int, observation: str):
    try:
        import gym_pusht  # noqa: F401 - registers gym_pusht/PushT-v0
        import gymnasium as gym
    except ImportError:
        raise UserError(f"Push-T rollouts need gym-pusht: {ROBOT_EXTRA}") from None
    obs_type = "state" if observation == "state" else "pixels_agent_pos"
    return [
        gym.make("gym_pusht/PushT-v0", obs_type=obs_type, render_mode="rgb_array")
        for _ in range(count)
    ]


class ChunkEnsemble:
    """ACT's temporal ensembling of overlapping action chunks, for many environments at once."""

    def __init__(self, envs: int, steps: int, chunk: int, dims: int, decay: float) -> None:
        self.predicted = np.full((envs, steps + chunk, steps, dims), np.nan)  # [env, t, made at]
        self.decay = decay

    def add(self, env: int, t: int, chunk: np.ndarray) -> None:
        self.predicted[env, t : t + len(chunk), t] = chunk

    def action(self, env: int, t: int) -> np.ndarray:
        made = self.predicted[env, t, : t + 1]
        made = made[~np.isnan(made[:, 0])]  # oldest first
        weights = np.exp(-self.decay * np.arange(len(made)))
        return (made * weights[:, None]).sum(0) / weights.sum()


def run_rollouts(policy, config: RolloutConfig, chunk: int, observation: str, out: Path | None):
    """Return per-episode results of ``policy`` (obs batch -> action chunks (n, k, 2) in
    board pixels); saves GIFs of the first ``config.videos`` episodes under ``out``."""
    seeds = [config.first_seed + i for i in range(config.rollouts)]
    envs = make_envs(len(seeds), observation)
    observations = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]
    ensemble = ChunkEnsemble(len(envs), config.max_steps, chunk, 2, config.ensemble_decay)
    plans: list[np.ndarray | None] = [None] * len(envs)
    running = np.ones(len(envs), dtype=bool)
    coverage, length = np.zeros(len(envs)), np.zeros(len(envs), dtype=int)
    frames: list[list[np.ndarray]] = [[] for _ in range(min(config.videos, len(envs)))]
    for t in range(config.max_steps):
        live = np.flatnonzero(running)
        if len(live) == 0:
            break
        query = live if config.temporal_ensemble or t % config.execute == 0 else []
        if len(query):
            chunks = policy([observations[i] for i in query], [seeds[i] for i in query], t)
            for i, c in zip(query, chunks):
                if config.temporal_ensemble:
                    ensemble.add(i, t, c)
                else:
                    plans[i] = c
        for i in live:
            if config.temporal_ensemble:
                action = ensemble.action(i, t)
            else:
                action = plans[i][t % config.execute]
            if i < len(frames):
                frames[i].append(envs[i].render())
            observations[i], _, terminated, truncated, info = envs[i].step(
                np.clip(action, 0, 512).astype(np.float32)
            )
            coverage[i] = max(coverage[i], float(info.get("coverage", 0.0)))
            length[i] = t + 1
            if terminated or truncated or coverage[i] >= config.success_coverage:
                running[i] = False
    for env in envs:
        env.close()
    if out is not None and frames:
        save_gifs(frames, seeds, out)
    return [
        {
            "seed": s,
            "coverage": float(c),
            "success": bool(c >= config.success_coverage),
            "steps": int(n),
        }
        for s, c, n in zip(seeds, coverage, length)
    ]


def save_gifs(frames: list[list[np.ndarray]], seeds: list[int], out: Path) -> None:
    """Write ``rollout-<seed>.gif`` (10 frames per second, as the demonstrations) per episode."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for episode, seed in zip(frames, seeds):
        images = [Image.fromarray(f).resize((240, 240)) for f in episode[::2]]
        if images:
            images[0].save(
                out / f"rollout-{seed}.gif",
                save_all=True,
                append_images=images[1:],
                duration=200,
                loop=0,
            )


def summarise(episodes: list[dict]) -> dict[str, float]:
    coverage = np.array([e["coverage"] for e in episodes])
    return {
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "coverage_mean": float(coverage.mean()),
        "coverage_max": float(coverage.max()),
        "episode_length_mean": float(np.mean([e["steps"] for e in episodes])),
    }


def model_policy(method, normaliser, observation: str, state_dims: list[int], device):
    """Return ``policy(observations, seeds, t) -> (n, k, 2)`` chunks from an ACT-JEPA model;
    ``state_dims`` are the state columns it was trained on ([] all)."""

    @torch.no_grad()
    def policy(observations, seeds, t):
        if observation == "state":
            states = torch.tensor(np.stack(observations), dtype=torch.float32)
            states = states[:, state_dims] if state_dims else states
            image = None
        else:
            states = torch.tensor(
                np.stack([o["agent_pos"] for o in observations]), dtype=torch.float32
            )
            image = torch.tensor(np.stack([o["pixels"] for o in observations]), dtype=torch.float32)
            image = image.permute(0, 3, 1, 2).to(device) / 255.0
        chunks = method.act(normaliser.states(states).to(device), image).float().cpu()
        return normaliser.unnormalise_actions(chunks).numpy()

    return policy


def random_policy(chunk: int):
    def policy(observations, seeds, t):
        rng = np.random.default_rng([seeds[0], t])
        return rng.uniform(0, 512, size=(len(observations), chunk, 2))

    return policy


def nearest_demo_policy(demos, episodes, chunk: int, observation: str):
    """Replay the training demonstration whose first state is nearest the episode's start."""
    starts = demos.episode_starts[episodes]
    first = demos.states[starts]
    scale = demos.states.std(0) + 1e-6
    chosen: dict[int, int] = {}

    def policy(observations, seeds, t):
        out = []
        for obs, seed in zip(observations, seeds):
            if seed not in chosen:
                # With images only the agent's position is known, so only it is compared.
                state = obs if observation == "state" else obs["agent_pos"]
                dims = len(state)
                distance = (((first[:, :dims] - state) / scale[:dims]) ** 2).sum(1)
                chosen[seed] = int(np.argmin(distance))
            e = episodes[chosen[seed]]
            begin, end = demos.episode_starts[e], demos.episode_ends[e]
            frames = np.minimum(np.arange(begin + t, begin + t + chunk), end - 1)
            out.append(demos.actions[frames])
        return np.stack(out)

    return policy
