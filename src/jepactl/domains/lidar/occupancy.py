"""The occupancy-reconstruction baseline (Occupancy-MAE / BEV-MAE style) at AD-L-JEPA's encoder.

AD-L-JEPA's cost claim (1.9-2.7x fewer GPU-hours, 2.8-4x less memory) is against Occupancy-MAE
(Min et al. 2023), which masks voxels and reconstructs the occupancy of the masked region with
a dense decoder at voxel resolution. Here, with the same pillar grid, masks (bev_masks.py),
encoder and budget as AD-L-JEPA:

    context = E(points in context cells), mask_token at the masked (target and target-empty)
              cells
    out     = D(context): 3 x [conv 3x3, norm, ReLU] on the cells, nearest upsampling to the
              pillars, conv 3x3 -> 2 channels per pillar: occupancy logit, log1p(point count)
    L       = BCE(occupancy) over every pillar of a masked cell
              + density_weight * L1(log1p count) over its occupied pillars

No EMA target: the targets are the input's own occupancy and density, as in MAE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from jepactl.domains.lidar.bev_masks import COUNT_CHANNEL, cells_to_pillars
from jepactl.domains.lidar.encoder import BEVEncoder, conv_block
from jepactl.domains.lidar.method import (
    LABELS_FROM,
    LidarRecipe,
    bev_predictor,
    eval_data,
    has_split,
    masked_inputs,
    masked_mean,
    pretrain_data,
    synthetic_data,
)
from jepactl.domains.lidar.probe import run_probe
from jepactl.methods.base import JEPAMethod, MethodSpec


@dataclass
class OccupancyObjective:
    density_weight: float = 1.0  # of the L1 on log1p(point count) at occupied masked pillars
    decoder_layers: int = 3  # on the cells, as AD-L-JEPA's predictor


@dataclass
class OccupancyRecipe(LidarRecipe):
    method: str = "occupancy-mae"
    objective: OccupancyObjective = field(default_factory=OccupancyObjective)


class OccupancyMAE(JEPAMethod):
    def __init__(self, recipe: OccupancyRecipe) -> None:
        super().__init__()
        self.context_encoder = BEVEncoder(recipe.model)
        dim = self.context_encoder.dim
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder = bev_predictor(dim, recipe.objective.decoder_layers)
        self.to_pillars = nn.Sequential(*conv_block(dim, dim // 2), nn.Conv2d(dim // 2, 2, 3, 1, 1))
        self.density_weight = recipe.objective.density_weight

    def encoder(self, which: str = "target") -> nn.Module:
        return self.context_encoder  # no target encoder: both names give the one encoder

    def export_modules(self) -> dict[str, nn.Module]:
        return {"context": self.context_encoder}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s = self.context_encoder.downsample
        grid = batch["grid"]
        height, width = grid.shape[-2:]
        context = self.context_encoder(masked_inputs(batch, s, "context_cells"))
        masked = batch["target_cells"] | batch["target_empty"]
        token = self.mask_token.to(context.dtype).view(1, -1, 1, 1)
        cells = self.decoder(torch.where(masked[:, None], token, context))
        if s > 1:
            cells = F.interpolate(cells, scale_factor=s, mode="nearest")
        out = self.to_pillars(cells[..., :height, :width]).float()
        region = cells_to_pillars(masked, s, height, width)
        counts = grid[:, COUNT_CHANNEL].float()  # normalised log1p(count); 0 where empty
        occupied = counts > 0
        bce = F.binary_cross_entropy_with_logits(out[:, 0], occupied.float(), reduction="none")
        occupancy = masked_mean(bce, region)
        density = masked_mean((out[:, 1] - counts).abs(), region & occupied)
        occupied_cells = batch["context_cells"][:, None].float()
        pooled = (context.float() * occupied_cells).sum((2, 3))
        return {
            "loss": occupancy + self.density_weight * density,
            "occupancy_loss": occupancy.detach(),
            "density_loss": density.detach(),
            "embeddings": (pooled / occupied_cells.sum((2, 3)).clamp_min(1)).detach(),
        }


def build(recipe: OccupancyRecipe) -> OccupancyMAE:
    return OccupancyMAE(recipe)


SPEC = MethodSpec(
    "occupancy-mae",
    OccupancyRecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    run_probe=run_probe,
    labels_from=LABELS_FROM,
)
