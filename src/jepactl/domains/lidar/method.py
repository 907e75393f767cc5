"""AD-L-JEPA: predict the BEV embeddings of masked LiDAR cells, with learnable empty tokens.

Reference: Zhu et al., arXiv 2501.04969 (AAAI 2026), HaoranZhuExplorer/AD-L-JEPA-Release
pcdet/models/backbones_3d/ad_l_jepa.py (methods.md section 5), here with the dense pillar
encoder (encoder.py) in place of spconv. For a batch of pillar grids and the four cell masks
of bev_masks.py:

    context  = E(points in context cells)                       # (B, C, h, w)
    map      = context at context cells, empty_token at context-empty cells, mask_token
               elsewhere; L2-normalised over channels
    pred     = normalise(P(map))                                # 3 x [conv 3x3, norm, ReLU]
    target   = normalise(E~(points in target cells)), empty_token at target-empty cells
               (E~ the EMA of E, no gradient; the empty token does get one through the target)
    L_jepa   = 0.75 mean_{target cells}(1 - cos) + 0.25 mean_{target-empty cells}(1 - cos)
    L_reg    = hinge(map at context cells) + hinge(pred at target cells),
               hinge(z) = mean_c relu(1/16 - sqrt(Var_cells z_c + 1e-4)), per sample
    L        = alpha L_jepa + beta L_reg                        # alpha 1, beta 1 (KITTI)

Only the encoder is EMA'd (0.996 -> 1); the predictor and the two tokens train directly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.domains.lidar.bev import (
    BEVMaskCollate,
    LidarDataConfig,
    PretrainClouds,
    labelled_clouds,
    open_clouds,
)
from jepactl.domains.lidar.bev_masks import cells_to_pillars
from jepactl.domains.lidar.encoder import BEVEncoder, BEVEncoderConfig, conv_block
from jepactl.domains.lidar.probe import LidarProbeConfig, run_probe
from jepactl.errors import UserError
from jepactl.methods.base import JEPAMethod, MethodSpec, PretrainData
from jepactl.recipe import EmaConfig, OptimConfig, Recipe, TrainConfig


@dataclass
class BEVMaskConfig:
    mask_ratio: float = 0.5  # MASKED_RATIO: share of non-empty cells that become targets


@dataclass
class ADLJEPAObjective:
    nonempty_weight: float = 0.75  # of the non-empty target cells' cosine loss
    empty_weight: float = 0.25  # of the target-empty cells'
    variance_floor: float = 1 / 16  # gamma of the variance hinge (1 / sqrt(256 channels))
    alpha: float = 1.0  # L_jepa's weight
    beta: float = 1.0  # L_reg's weight (KITTI 1, Waymo 10)
    predictor_layers: int = 3


def reference_optim() -> OptimConfig:
    """OpenPCDet's adam_onecycle (lr 3e-4, wd 0.01, pct_start 0.4, div_factor 10) as warmup +
    cosine; its momentum cycling (0.95 -> 0.85) is not reproduced. Gradient norm clip 10."""
    return OptimConfig(
        lr=3e-4,
        start_lr=3e-5,
        final_lr=3e-9,
        warmup_steps=11_136,  # 40 % of 30 epochs x 3,712 KITTI scans / batch 4
        weight_decay=0.01,
        final_weight_decay=0.01,
        grad_clip=10.0,
    )


@dataclass
class LidarRecipe(Recipe):
    """The sections shared by AD-L-JEPA and the occupancy baseline (occupancy.py)."""

    domain: str = "lidar"
    data: LidarDataConfig = field(default_factory=LidarDataConfig)
    model: BEVEncoderConfig = field(default_factory=BEVEncoderConfig)
    mask: BEVMaskConfig = field(default_factory=BEVMaskConfig)
    optim: OptimConfig = field(default_factory=reference_optim)
    train: TrainConfig = field(
        # Batch 4 per GPU, 30 epochs of KITTI's 3,712 training scans.
        default_factory=lambda: TrainConfig(batch_size=4, max_steps=27_840, precision="bf16")
    )
    probe: LidarProbeConfig = field(default_factory=LidarProbeConfig)


@dataclass
class ADLJEPARecipe(LidarRecipe):
    method: str = "ad-l-jepa"
    objective: ADLJEPAObjective = field(default_factory=ADLJEPAObjective)
    ema: EmaConfig = field(default_factory=lambda: EmaConfig(start=0.996, end=1.0))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` (same shape); 0 (with a graph) when nothing is masked."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def variance_hinge(z: torch.Tensor, cells: torch.Tensor, floor: float) -> torch.Tensor:
    """VICReg's variance term per sample over its ``cells`` (B, h, w) of z (B, C, h, w):
    mean_c relu(floor - std_c), averaged over the samples with at least two such cells."""
    weight = cells[:, None].to(z.dtype)
    count = weight.sum((2, 3))  # (B, 1)
    mean = (z * weight).sum((2, 3)) / count.clamp_min(1)
    var = (((z - mean[..., None, None]) ** 2) * weight).sum((2, 3)) / (count - 1).clamp_min(1)
    hinge = F.relu(floor - torch.sqrt(var + 1e-4)).mean(1)
    usable = (count[:, 0] >= 2).to(z.dtype)
    return (hinge * usable).sum() / usable.sum().clamp_min(1)


def bev_predictor(dim: int, layers: int) -> nn.Sequential:
    """The reference's predictor: ``layers`` x [conv 3x3, norm, ReLU] at the encoder's width."""
    return nn.Sequential(*[m for _ in range(layers) for m in conv_block(dim, dim)])


def masked_inputs(batch: dict[str, torch.Tensor], downsample: int, cells: str) -> torch.Tensor:
    """The pillar grid with every pillar outside ``batch[cells]`` zeroed (its points removed)."""
    grid = batch["grid"]
    keep = cells_to_pillars(batch[cells], downsample, *grid.shape[-2:])
    return grid * keep[:, None].to(grid.dtype)


class ADLJEPA(JEPAMethod):
    def __init__(self, recipe: ADLJEPARecipe) -> None:
        super().__init__()
        self.context_encoder = BEVEncoder(recipe.model)
        self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
        dim = self.context_encoder.dim
        self.objective = recipe.objective
        self.predictor = bev_predictor(dim, recipe.objective.predictor_layers)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.empty_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.empty_token, std=0.02)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.context_encoder, self.target_encoder)]

    def encoder(self, which: str = "target") -> nn.Module:
        return self.target_encoder if which == "target" else self.context_encoder

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s, obj = self.context_encoder.downsample, self.objective
        context = self.context_encoder(masked_inputs(batch, s, "context_cells")).float()
        context_cells, context_empty = (
            batch["context_cells"][:, None],
            batch["context_empty"][:, None],
        )
        token = lambda t: t.float().view(1, -1, 1, 1)  # noqa: E731
        filled = torch.where(
            context_cells,
            context,
            torch.where(context_empty, token(self.empty_token), token(self.mask_token)),
        )
        filled = F.normalize(filled, dim=1)
        predicted = F.normalize(self.predictor(filled).float(), dim=1)
        with torch.no_grad():
            target = self.target_encoder(masked_inputs(batch, s, "target_cells")).float()
        target = torch.where(batch["target_empty"][:, None], token(self.empty_token), target)
        target = F.normalize(target, dim=1)
        distance = 1.0 - (predicted * target).sum(1)  # (B, h, w)
        nonempty = masked_mean(distance, batch["target_cells"])
        empty = masked_mean(distance, batch["target_empty"])
        jepa = obj.nonempty_weight * nonempty + obj.empty_weight * empty
        floor = obj.variance_floor
        reg = variance_hinge(filled, batch["context_cells"], floor) + variance_hinge(
            predicted, batch["target_cells"], floor
        )
        occupied = batch["context_cells"][:, None].float()
        return {
            "loss": obj.alpha * jepa + obj.beta * reg,
            "jepa_loss": jepa.detach(),
            "nonempty_loss": nonempty.detach(),
            "empty_loss": empty.detach(),
            "variance_loss": reg.detach(),
            "target_variance_loss": variance_hinge(target, batch["target_cells"], floor).detach(),
            # Per sample, the mean context feature over its cells: the collapse monitors' input.
            "embeddings": (
                (context * occupied).sum((2, 3)) / occupied.sum((2, 3)).clamp_min(1)
            ).detach(),
        }


def build(recipe: ADLJEPARecipe) -> ADLJEPA:
    return ADLJEPA(recipe)


def check_mask(recipe: LidarRecipe) -> None:
    if not 0.0 < recipe.mask.mask_ratio < 1.0:
        raise UserError(
            f"recipe key 'mask.mask_ratio' must be between 0 and 1, got {recipe.mask.mask_ratio}"
        )


def pretrain_data(recipe: LidarRecipe, path: str | None) -> PretrainData:
    """Return (clouds by SampleKey, the grid-and-masks collate, the clouds); bad files skipped."""
    check_mask(recipe)
    clouds = open_clouds(path, recipe.data)
    downsample = BEVEncoder(recipe.model).downsample
    collate = BEVMaskCollate(recipe.data.grid, downsample, recipe.mask.mask_ratio)
    return PretrainData(PretrainClouds(clouds, recipe.data), collate, clouds)


class SyntheticClouds(torch.utils.data.Dataset):
    """Random clouds in the recipe's range (``jepactl bench`` without data)."""

    def __init__(self, recipe: LidarRecipe, points: int = 20_000, length: int = 100_000) -> None:
        self.range, self.points, self.length = recipe.data.grid.point_range, points, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> dict:
        _, sample_seed, batch_seed = key
        rng = torch.Generator().manual_seed(sample_seed)
        low = torch.tensor(self.range[:3] + [0.0])
        high = torch.tensor(self.range[3:] + [1.0])
        points = low + torch.rand(self.points, 4, generator=rng) * (high - low) * 0.999
        return {"points": points.numpy(), "batch_seed": batch_seed}


def synthetic_data(recipe: LidarRecipe):
    downsample = BEVEncoder(recipe.model).downsample
    return SyntheticClouds(recipe), BEVMaskCollate(
        recipe.data.grid, downsample, recipe.mask.mask_ratio
    )


def eval_data(recipe: LidarRecipe, path: str, split: str | None, augment=False, seed=0):
    """The labelled clouds at ``path``: a stratified ``probe.test_fraction`` split seeded by
    ``probe.seed`` (``split`` train or test), or all of them."""
    cfg = recipe.probe
    return labelled_clouds(recipe.data, path, split, cfg.test_fraction, cfg.seed)


def has_split(recipe: LidarRecipe, path: str | None, split: str) -> bool:
    return split in ("train", "test")  # a stratified split of the labelled clouds


LABELS_FROM = "labels come from sub-folders, data.labels_csv or DALES file numbers (data.labels)"

SPEC = MethodSpec(
    "ad-l-jepa",
    ADLJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    run_probe=run_probe,
    labels_from=LABELS_FROM,
)
