"""DMT-JEPA: I-JEPA whose targets aggregate each patch's most similar neighbours.

Reference: Mo & Yun, arXiv 2405.17995; DMTJEPA/DMTJEPA src/train.py (methods.md §1). Everything
is I-JEPA (``methods/ijepa.py``: masking, predictor, smooth-L1, LayerNorm-ed targets, schedules)
except one module, the local aggregation head (``nn/local_aggregation.py``):

    h = layer_norm(target_encoder(images))
    h = target_head.aggregate_neighbours(h)         # EMA copy of the head: the targets
    z = context_head.refine_context(context_encoder(images, context))
    loss = smooth_l1(predictor(z, context, targets), h[targets])

The trainable head is EMA-updated into the target head with the encoder's momentum, and its
parameters join the optimizer through the method's parameters (decay and no-decay groups).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from jepactl.methods import ijepa
from jepactl.methods.ijepa import IJEPA, IJEPARecipe
from jepactl.methods.losses import regression_loss
from jepactl.nn.local_aggregation import LocalAggregationConfig, LocalAggregationHead
from jepactl.nn.vit import gather_tokens, layer_norm_targets


@dataclass
class DMTJEPARecipe(IJEPARecipe):
    method: str = "dmt-jepa"
    aggregation: LocalAggregationConfig = field(default_factory=LocalAggregationConfig)


RECIPE = DMTJEPARecipe


class DMTJEPA(IJEPA):
    def __init__(self, recipe: DMTJEPARecipe) -> None:
        super().__init__(recipe)
        model = recipe.model
        self.context_head = LocalAggregationHead(
            self.context_encoder.tokenizer.grid, model.embed_dim, model.num_heads,
            recipe.aggregation, mlp_ratio=model.mlp_ratio, qkv_bias=model.qkv_bias,
            norm_eps=model.norm_eps)
        self.target_head = copy.deepcopy(self.context_head).requires_grad_(False)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [*super().ema_pairs(), (self.context_head, self.target_head)]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, targets = batch["images"], batch["targets"]
        context_index, context_valid = batch["context"], batch.get("context_valid")
        with torch.no_grad():
            self.target_encoder.eval()
            self.target_head.eval()
            full = self.target_encoder(images)
            if self.loss_config.target_norm == "layer_norm":
                full = layer_norm_targets(full)
            wanted = gather_tokens(self.target_head.aggregate_neighbours(full), targets)
        context = self.context_encoder(images, context_index, context_valid)
        context = self.context_head.refine_context(context, context_valid)
        predicted = self.predictor(context, context_index, context_valid, targets)
        loss = regression_loss(predicted.float(), wanted.float(), self.loss_config.kind)
        return {"loss": loss, "embeddings": full.mean(dim=1).detach()}


def build(recipe: DMTJEPARecipe) -> DMTJEPA:
    return DMTJEPA(recipe)


# Data, masks and evaluation are I-JEPA's.
pretrain_data = ijepa.pretrain_data
eval_data = ijepa.eval_data
has_split = ijepa.has_split
