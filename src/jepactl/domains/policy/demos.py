"""Expert demonstrations: readers for the common robot-learning layouts, episode-aware windows.

Two layouts, told apart by what the path holds:

* a **zarr replay buffer** (Diffusion Policy's, e.g. ``pusht_cchi_v7_replay.zarr``): arrays
  ``data/state`` (T, S), ``data/action`` (T, A), optional ``data/img`` (T, H, W, 3) in 0-255,
  and ``meta/episode_ends`` (E,), each episode's exclusive end;
* a **LeRobot-style folder** of parquet frames (any depth): columns ``episode_index``,
  ``observation.state``, ``action``, optional ``frame_index`` (order within an episode) and
  ``observation.image`` (image bytes, as ``datasets`` stores an ``Image()`` column).

A sample is one frame t of a training episode: the observation o_t, the action chunk
a_t..a_{t+k-1} and the future observations o_{t+1}..o_{t+k}. Windows never cross an episode's
end: past it the chunk repeats the episode's last action and the future its last observation
(as ACT pads), and ``action_valid`` / ``future_valid`` mark the real steps so the losses skip
the padding. Episodes, not frames, are split into training and validation; states and actions
are standardised with the training episodes' mean and std, stored in the recipe
(``data.fitted``) so a checkpoint, a probe and a rollout use the same numbers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from jepactl.errors import DataError, UserError

ROBOT_EXTRA = 'pip install "jepactl[robot]"'


@dataclass
class DemoDataConfig:
    """Where the demonstrations are and how a sample is cut from them."""

    path: str | None = None  # a .zarr replay buffer or a LeRobot-style parquet folder
    observation: Literal["state", "image"] = "state"  # image: the frame and the state
    chunk: int = 16  # k: actions predicted per step and future observations predicted
    image_size: int = 96
    # The state's columns the policy observes; [] all of them. With images, Push-T's policies
    # see the agent's position only ([0, 1]): the block is in the image, as in the simulator's
    # pixels_agent_pos observation.
    state_dims: list[int] = field(default_factory=list)
    val_fraction: float = 0.1  # episodes held out (seeded by split_seed) for probes
    split_seed: int = 0
    # Filled by pretraining: state/action mean and std of the training episodes, and which
    # episodes are held out. Kept in the run's recipe.yaml; do not set by hand.
    fitted: dict[str, Any] | None = None


@dataclass
class Demonstrations:
    """Frames of all episodes back to back; ``episode_ends[e]`` ends episode e (exclusive)."""

    name: str
    states: np.ndarray  # (T, S) float32
    actions: np.ndarray  # (T, A) float32
    episode_ends: np.ndarray  # (E,) int64
    images: Any = None  # (T, H, W, 3) 0-255, indexable lazily (zarr array), or None
    skipped: list[str] = field(default_factory=list)  # unreadable files (none: one store)
    # Every state column, also when ``states`` keeps only the observed ones (data.state_dims):
    # the world-model probe predicts the whole future state, the block's pose included.
    all_states: np.ndarray | None = None

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]])

    def episode_lengths(self) -> np.ndarray:
        return self.episode_ends - self.episode_starts

    def images_in_memory(self, size: int) -> np.ndarray:
        """Return every frame as one (T, size, size, 3) uint8 array, read and resized once.

        A zarr store decompresses a whole chunk (161 Push-T frames) to return one frame, about
        20 ms, and a window needs k + 1 frames; Push-T's 25,650 frames take 0.7 GB as uint8.
        """
        if not isinstance(self.images, np.ndarray) or self.images.shape[1:3] != (size, size):
            self.images = _read_all_images(self.images, size)
        return self.images

    def frames_of(self, episodes: np.ndarray) -> np.ndarray:
        """Return the frame indices of ``episodes`` in order."""
        starts, ends = self.episode_starts, self.episode_ends
        return np.concatenate([np.arange(starts[e], ends[e]) for e in episodes]).astype(np.int64)


def _import_zarr():
    try:
        import zarr
    except ImportError:
        raise UserError(f"reading a zarr replay buffer needs zarr: {ROBOT_EXTRA}") from None
    return zarr


def read_zarr(path: Path) -> Demonstrations:
    """Return the demonstrations of a zarr replay buffer (``data/*`` + ``meta/episode_ends``)."""
    zarr = _import_zarr()
    try:
        root = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not a store
        raise DataError(f"'{path}' is not a readable zarr store ({err})") from None
    needed = ("data/state", "data/action", "meta/episode_ends")
    missing = [name for name in needed if name not in root]
    if missing:
        raise DataError(
            f"zarr '{path}' has no {', '.join(missing)} (a replay buffer needs {', '.join(needed)})"
        )
    states = np.asarray(root["data/state"][:], dtype=np.float32)
    actions = np.asarray(root["data/action"][:], dtype=np.float32)
    if len(states) != len(actions):
        raise DataError(
            f"zarr '{path}': data/state has {len(states)} frames, data/action {len(actions)}"
        )
    ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)
    check_episode_ends(ends, len(states), f"zarr '{path}': meta/episode_ends")
    images = root["data/img"] if "data/img" in root else None
    return Demonstrations(str(path), states, actions, ends, images)


def _read_all_images(images, size: int, block: int = 2048) -> np.ndarray:
    """Read ``images`` (T, H, W, 3), 0-255, in blocks into uint8, resized to size x size."""
    count = images.shape[0] if hasattr(images, "shape") else len(images)  # zarr 3: no len()
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for start in range(0, count, block):
        part = np.asarray(images[start : start + block], dtype=np.float32)
        if part.shape[1:3] != (size, size):
            resized = torch.nn.functional.interpolate(
                torch.from_numpy(part).permute(0, 3, 1, 2),
                size=(size, size),
                mode="bilinear",
                antialias=True,
            )
            part = resized.permute(0, 2, 3, 1).numpy()
        out[start : start + len(part)] = np.clip(np.rint(part), 0, 255).astype(np.uint8)
    return out


def check_episode_ends(ends: np.ndarray, frames: int, what: str) -> None:
    """Raise a DataError unless ``ends`` rises strictly from above 0 to exactly ``frames``."""
    if ends.ndim != 1 or len(ends) == 0:
        raise DataError(f"{what} is empty")
    if int(ends[0]) <= 0 or bool((np.diff(ends) <= 0).any()) or int(ends[-1]) != frames:
        raise DataError(
            f"{what} out of range: episode ends must rise strictly from above 0 to the "
            f"{frames} frames (got {int(ends[0])} .. {int(ends[-1])})"
        )


def read_lerobot(path: Path) -> Demonstrations:
    """Return the demonstrations of a LeRobot-style folder of parquet frames."""
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise DataError(f"'{path}' has no parquet files (a LeRobot dataset folder has data/*)")
    frames = [pq.read_table(f).to_pandas() for f in files]
    import pandas as pd

    table = pd.concat(frames, ignore_index=True)
    for column in ("episode_index", "observation.state", "action"):
        if column not in table.columns:
            raise DataError(
                f"LeRobot folder '{path}' has no '{column}' column (columns: "
                f"{', '.join(map(str, table.columns))})"
            )
    order = ["episode_index"] + (["frame_index"] if "frame_index" in table.columns else [])
    table = table.sort_values(order, kind="stable").reset_index(drop=True)
    states = np.stack(table["observation.state"].map(np.asarray).to_list()).astype(np.float32)
    actions = np.stack(table["action"].map(np.asarray).to_list()).astype(np.float32)
    episodes = table["episode_index"].to_numpy()
    ends = np.flatnonzero(np.diff(episodes)) + 1
    ends = np.concatenate([ends, [len(table)]]).astype(np.int64)
    images = None
    if "observation.image" in table.columns:
        images = _DecodedImages(table["observation.image"].to_list())
    return Demonstrations(str(path), states, actions, ends, images)


class _DecodedImages:
    """Frames stored as image bytes (``{"bytes": ...}`` or raw bytes), decoded on access."""

    def __init__(self, cells: list) -> None:
        self.cells = cells

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.stack([self[i] for i in range(*index.indices(len(self)))])
        from PIL import Image

        cell = self.cells[index]
        data = cell["bytes"] if isinstance(cell, dict) else cell
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def open_demos(path: str, config: DemoDataConfig | None = None) -> Demonstrations:
    """Return the demonstrations at ``path``: a zarr replay buffer or a LeRobot folder, with
    the state columns ``config.state_dims`` when it names some."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data path '{path}' does not exist")
    is_zarr = root.suffix == ".zarr" or any(
        (root / marker).exists() for marker in (".zgroup", "zarr.json")
    )
    demos = read_zarr(root) if is_zarr else read_lerobot(root)
    if demos.states.ndim != 2 or demos.actions.ndim != 2:
        raise DataError(f"'{path}': states and actions must be (frames, dims) arrays")
    demos.all_states = demos.states
    if config is not None and config.state_dims:
        bad = [d for d in config.state_dims if not 0 <= d < demos.states.shape[1]]
        if bad:
            raise DataError(
                f"recipe key 'data.state_dims': column {bad[0]} is not among the "
                f"{demos.states.shape[1]} state columns of '{path}'"
            )
        demos.states = demos.states[:, config.state_dims]
    return demos


def split_episodes(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (training episodes, validation episodes), a seeded split of whole episodes."""
    order = np.random.default_rng(seed).permutation(count)
    held = int(round(count * val_fraction)) if count > 1 else 0
    held = min(max(held, 1 if val_fraction > 0 and count > 1 else 0), count - 1)
    return np.sort(order[held:]), np.sort(order[:held])


def fit(demos: Demonstrations, config: DemoDataConfig) -> dict[str, Any]:
    """Return ``data.fitted``: the episode split and the training episodes' statistics."""
    lengths = demos.episode_lengths()
    if config.chunk < 1:
        raise UserError(f"recipe key 'data.chunk': must be at least 1, got {config.chunk}")
    if config.chunk > int(lengths.max()):
        raise DataError(
            f"recipe key 'data.chunk' = {config.chunk} is longer than every episode of "
            f"'{demos.name}' (the longest has {int(lengths.max())} frames)"
        )
    train, val = split_episodes(len(lengths), config.val_fraction, config.split_seed)
    frames = demos.frames_of(train)
    states, actions = demos.states[frames], demos.actions[frames]
    return {
        "train_episodes": train.tolist(),
        "val_episodes": val.tolist(),
        "state_mean": states.mean(0).tolist(),
        "state_std": np.maximum(states.std(0), 1e-6).tolist(),
        "action_mean": actions.mean(0).tolist(),
        "action_std": np.maximum(actions.std(0), 1e-6).tolist(),
    }


class Normaliser:
    """Standardise states and actions with the fitted statistics, and back."""

    def __init__(self, fitted: dict[str, Any]) -> None:
        as_tensor = lambda key: torch.tensor(fitted[key], dtype=torch.float32)  # noqa: E731
        self.state_mean, self.state_std = as_tensor("state_mean"), as_tensor("state_std")
        self.action_mean, self.action_std = as_tensor("action_mean"), as_tensor("action_std")

    def states(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.state_mean) / self.state_std

    def actions(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.action_mean) / self.action_std

    def unnormalise_actions(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.action_std + self.action_mean


class DemoWindows(Dataset):
    """Frame t of ``episodes`` -> its observation, action chunk and future observations.

    Keys: ``state`` (S,), ``actions`` (k, A), ``action_valid`` (k,), ``future_states`` (k, S),
    ``future_valid`` (k,), and with images ``image`` (3, H, W) and ``future_images`` (k, 3, H,
    W) in [0, 1]. Indexed by ``SampleKey`` for pretraining or by an int for evaluation.
    """

    def __init__(
        self,
        demos: Demonstrations,
        episodes,
        config: DemoDataConfig,
        fitted: dict,
        future_images: bool = True,
    ) -> None:
        self.demos, self.config, self.future_images = demos, config, future_images
        self.norm = Normaliser(fitted)
        self.frames = demos.frames_of(np.asarray(episodes, dtype=np.int64))
        # The episode end (exclusive) of every frame, for clamping windows to their episode.
        end_of = np.repeat(demos.episode_ends, demos.episode_lengths())
        self.end_of = end_of
        self.images = None
        if config.observation == "image":
            if demos.images is None:
                raise DataError(f"'{demos.name}' has no images; use data.observation=state")
            self.images = demos.images_in_memory(config.image_size)

    def __len__(self) -> int:
        return len(self.frames)

    def image(self, frame: int) -> torch.Tensor:
        return torch.from_numpy(self.images[frame]).permute(2, 0, 1).float() / 255.0

    def future_frames(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (action frames, action valid, future frames, future valid) of frame ``t``:
        t..t+k-1 and t+1..t+k, clamped to the episode's last frame (ACT repeats its last
        action) with the clamped steps marked invalid, so no window crosses an episode end."""
        k, last = self.config.chunk, int(self.end_of[t]) - 1
        steps = np.arange(t, t + k)
        return (
            np.minimum(steps, last),
            steps <= last,
            np.minimum(steps + 1, last),
            steps + 1 <= last,
        )

    def __getitem__(self, key) -> dict:
        index = key[0] if isinstance(key, tuple) else int(key)
        t = int(self.frames[index])
        action_frames, action_valid, future_frames, future_valid = self.future_frames(t)
        states = torch.from_numpy(self.demos.states)
        sample = {
            "state": self.norm.states(states[t]),
            "actions": self.norm.actions(torch.from_numpy(self.demos.actions[action_frames])),
            "action_valid": torch.from_numpy(action_valid),
            "future_states": self.norm.states(states[future_frames]),
            "future_valid": torch.from_numpy(future_valid),
        }
        if self.images is not None:
            sample["image"] = self.image(t)
            if self.future_images:
                sample["future_images"] = torch.stack([self.image(int(f)) for f in future_frames])
        if isinstance(key, tuple):
            sample["batch_seed"] = key[2]
        return sample


def collate_windows(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack the windows' tensors batch-first (no masks to draw: the future is the target)."""
    return {
        name: torch.stack([s[name] for s in samples]) for name in samples[0] if name != "batch_seed"
    }
