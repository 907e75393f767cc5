"""DMT-JEPA: I-JEPA whose targets aggregate each patch's most similar neighbours.

Reference: Mo & Yun, arXiv 2405.17995; DMTJEPA/DMTJEPA src/train.py (methods.md §1). Everything
is I-JEPA (``domains/image/ijepa.py``: masking, predictor, smooth-L1, LayerNorm-ed targets,
schedules) except one module, the local aggregation head (``domains/image/local_aggregation.py``):

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

from jepactl.domains.image import ijepa
from jepactl.domains.image.ijepa import IJEPA, IJEPARecipe
from jepactl.domains.image.local_aggregation import LocalAggregationConfig, LocalAggregationHead
from jepactl.methods.base import MethodSpec


@dataclass
class DMTJEPARecipe(IJEPARecipe):
    method: str = "dmt-jepa"
    aggregation: LocalAggregationConfig = field(default_factory=LocalAggregationConfig)


class DMTJEPA(IJEPA):
    def __init__(self, recipe: DMTJEPARecipe) -> None:
        super().__init__(recipe)
        model = recipe.model
        self.context_head = LocalAggregationHead(
            self.context_encoder.tokenizer.grid,
            model.embed_dim,
            model.num_heads,
            recipe.aggregation,
            mlp_ratio=model.mlp_ratio,
            qkv_bias=model.qkv_bias,
            norm_eps=model.norm_eps,
        )
        self.target_head = copy.deepcopy(self.context_head).requires_grad_(False)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [*super().ema_pairs(), (self.context_head, self.target_head)]

    # forward is ContextTargetPredictor's with the two heads in its hooks.
    def refine_targets(self, full: torch.Tensor) -> torch.Tensor:
        self.target_head.eval()
        return self.target_head.aggregate_neighbours(full)

    def refine_context(self, encoded: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        return self.context_head.refine_context(encoded, valid)


def build(recipe: DMTJEPARecipe) -> DMTJEPA:
    return DMTJEPA(recipe)


# Data, masks, evaluation and bench's synthetic images are I-JEPA's (the recipe is a subclass).
pretrain_data = ijepa.pretrain_data
synthetic_data = ijepa.synthetic_data
eval_data = ijepa.eval_data
has_split = ijepa.has_split

SPEC = MethodSpec(
    "dmt-jepa",
    DMTJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    label_file="file,label",
)
