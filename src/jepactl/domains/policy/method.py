"""ACT-JEPA: imitation learning with action chunking and JEPA observation chunking.

Reference: Vujinovic & Kovacevic, arXiv 2501.14622 (methods.md section 2; no public code, so
ACT's defaults fill what the paper leaves open). One model, two objectives, on a window of a
demonstration (demos.py):

    tokens, _ = context_encoder(o_t)                       # s_t
    actions   = action_decoder(tokens)                     # a_t .. a_{t+k-1}
    latents   = predictor(tokens)                          # s^_{t+1} .. s^_{t+k}
    targets   = stop_grad(target_encoder(o_{t+1..t+k}))    # EMA of the context encoder
    loss      = L1(actions, demo actions) + latent_weight * smooth_l1(latents, targets)

with the padded steps past an episode's end left out of both. ``objective.latent_weight: 0`` is
the ACT-only baseline: the same model and budget, the predictor unused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from jepactl.domains.policy.demos import (
    DemoDataConfig,
    DemoWindows,
    collate_windows,
    fit,
    open_demos,
)
from jepactl.domains.policy.model import ChunkDecoder, ObservationEncoder, PolicyModelConfig
from jepactl.domains.policy.probe import PolicyProbeConfig, run_probe
from jepactl.errors import UserError
from jepactl.methods.base import JEPAMethod, MethodSpec, PretrainData
from jepactl.methods.losses import regression_loss
from jepactl.nn.vit import layer_norm_targets
from jepactl.recipe import EmaConfig, LossConfig, OptimConfig, Recipe, TrainConfig

PUSHT_STATE, PUSHT_ACTION = 5, 2  # agent x, y, block x, y, angle; target x, y


@dataclass
class ObjectiveConfig:
    latent_weight: float = 1.0  # lambda; 0 is ACT alone


@dataclass
class ACTJEPARecipe(Recipe):
    """Defaults: ACT's (Zhao et al. 2023) where ACT-JEPA does not say otherwise."""

    domain: str = "policy"
    method: str = "act-jepa"
    data: DemoDataConfig = field(default_factory=DemoDataConfig)
    model: PolicyModelConfig = field(default_factory=PolicyModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # ACT: AdamW lr 1e-5 (1e-4 in its Push-T-like sim settings), weight decay 1e-4, constant.
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1e-4,
            start_lr=1e-4,
            final_lr=1e-4,
            warmup_steps=0,
            weight_decay=1e-4,
            final_weight_decay=1e-4,
        )
    )
    ema: EmaConfig = field(default_factory=lambda: EmaConfig(start=0.996, end=1.0))
    loss: LossConfig = field(default_factory=LossConfig)  # the latent loss (smooth-L1, LN)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_size=64, max_steps=100_000, precision="bf16")
    )
    probe: PolicyProbeConfig = field(default_factory=PolicyProbeConfig)


class ACTJEPA(JEPAMethod):
    def __init__(self, recipe: ACTJEPARecipe) -> None:
        super().__init__()
        fitted = recipe.data.fitted
        if not fitted:
            raise UserError(
                "recipe key 'data.fitted' is empty: ACT-JEPA needs the statistics fitted by "
                "`jepactl pretrain` (use a run folder)"
            )
        state_dim, action_dim = len(fitted["state_mean"]), len(fitted["action_mean"])
        image_size = recipe.data.image_size if recipe.data.observation == "image" else None
        cfg, chunk = recipe.model, recipe.data.chunk
        self.context_encoder = ObservationEncoder(cfg, state_dim, image_size)
        self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
        self.action_decoder = ChunkDecoder(cfg, chunk, cfg.decoder_layers, action_dim)
        self.predictor = ChunkDecoder(cfg, chunk, cfg.predictor_layers, cfg.dim)
        self.latent_weight = recipe.objective.latent_weight
        self.loss_config = recipe.loss

    def train(self, mode: bool = True) -> "ACTJEPA":
        """Train mode everywhere but the target encoder: its dropout would add noise to the
        targets (and cost a third of an image step's forward on a CPU)."""
        super().train(mode)
        self.target_encoder.eval()
        return self

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.context_encoder, self.target_encoder)]

    def encoder(self, which: str = "target") -> nn.Module:
        return self.target_encoder if which == "target" else self.context_encoder

    def act(self, state: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Return the normalised action chunk (B, k, A) for normalised observations."""
        tokens, _ = self.context_encoder(state, image)
        return self.action_decoder(tokens)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch.get("image")
        tokens, summary = self.context_encoder(batch["state"], image)
        actions = self.action_decoder(tokens).float()
        valid = batch["action_valid"].float()
        error = (actions - batch["actions"].float()).abs().mean(-1)
        action_loss = (error * valid).sum() / valid.sum().clamp_min(1)
        out = {"loss": action_loss, "action_loss": action_loss.detach()}
        if self.latent_weight > 0:
            latent_loss = self.latent_loss(tokens, batch)
            out["loss"] = action_loss + self.latent_weight * latent_loss
            out["latent_loss"] = latent_loss.detach()
        out["embeddings"] = summary.detach().float()
        return out

    def latent_loss(self, tokens: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Smooth-L1 between the predicted and the target encoder's future latents (valid steps)."""
        b, k, s = batch["future_states"].shape
        with torch.no_grad():
            images = batch.get("future_images")
            _, targets = self.target_encoder(
                batch["future_states"].reshape(b * k, s),
                None if images is None else images.flatten(0, 1),
            )
            targets = targets.reshape(b, k, -1).float()
            if self.loss_config.target_norm == "layer_norm":
                targets = layer_norm_targets(targets)
        predicted = self.predictor(tokens).float()
        valid = batch["future_valid"]
        if not bool(valid.any()):
            return predicted.sum() * 0.0
        return regression_loss(predicted[valid], targets[valid], self.loss_config.kind)


def build(recipe: ACTJEPARecipe) -> ACTJEPA:
    return ACTJEPA(recipe)


def pretrain_data(recipe: ACTJEPARecipe, path: str | None) -> PretrainData:
    """Return (windows of the training episodes, collate, demonstrations); fits ``data.fitted``.

    Fitting here (before the trainer writes recipe.yaml and builds the model) stores the episode
    split and the statistics in the run; a resumed run reads them back.
    """
    if path is None:
        raise UserError("no data: pass --data PATH (a .zarr replay buffer or a LeRobot folder)")
    demos = open_demos(path, recipe.data)
    if recipe.data.fitted is None:
        recipe.data.fitted = fit(demos, recipe.data)
    fitted = recipe.data.fitted
    # ACT alone never encodes the future frames, so its windows do not read them.
    future_images = recipe.objective.latent_weight > 0
    windows = DemoWindows(demos, fitted["train_episodes"], recipe.data, fitted, future_images)
    return PretrainData(windows, collate_windows, demos)


class SyntheticWindows(torch.utils.data.Dataset):
    """Random windows of Push-T's shapes (5-d state, 2-d action), for ``jepactl bench``."""

    def __init__(self, recipe: ACTJEPARecipe, length: int = 100_000) -> None:
        self.config, self.length = recipe.data, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> dict:
        _, sample_seed, batch_seed = key
        gen = torch.Generator().manual_seed(sample_seed)
        k, size = self.config.chunk, self.config.image_size
        sample = {
            "state": torch.randn(PUSHT_STATE, generator=gen),
            "actions": torch.randn(k, PUSHT_ACTION, generator=gen),
            "action_valid": torch.ones(k, dtype=torch.bool),
            "future_states": torch.randn(k, PUSHT_STATE, generator=gen),
            "future_valid": torch.ones(k, dtype=torch.bool),
            "batch_seed": batch_seed,
        }
        if self.config.observation == "image":
            sample["image"] = torch.rand(3, size, size, generator=gen)
            sample["future_images"] = torch.rand(k, 3, size, size, generator=gen)
        return sample


def synthetic_data(recipe: ACTJEPARecipe):
    """Return (random windows, collate) of Push-T's shapes; sets identity statistics if none."""
    if recipe.data.fitted is None:
        recipe.data.fitted = {
            "train_episodes": [],
            "val_episodes": [],
            "state_mean": [0.0] * PUSHT_STATE,
            "state_std": [1.0] * PUSHT_STATE,
            "action_mean": [0.0] * PUSHT_ACTION,
            "action_std": [1.0] * PUSHT_ACTION,
        }
    return SyntheticWindows(recipe), collate_windows


def eval_data(
    recipe: ACTJEPARecipe,
    path: str,
    split: str | None,
    augment: bool = False,
    seed: int = 0,
):
    """Return the windows of the held-out episodes (``split`` test) or the training ones."""
    demos = open_demos(path, recipe.data)
    fitted = recipe.data.fitted or fit(demos, recipe.data)
    episodes = fitted["val_episodes"] if split == "test" else fitted["train_episodes"]
    return DemoWindows(demos, episodes, recipe.data, fitted)


def has_split(recipe: ACTJEPARecipe, path: str | None, split: str) -> bool:
    return split in ("train", "test")  # the fitted episode split


SPEC = MethodSpec(
    "act-jepa",
    ACTJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    run_probe=run_probe,
    labels_from="policies are scored by rollouts and the future-state probe, not labels",
    no_online_probe="a policy is scored by rollouts (jepactl probe RUN --rollouts N)",
)
