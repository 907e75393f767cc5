"""The contract between a method and the trainer.

A method owns its modules and maps a batch to a dict of scalars whose ``"loss"`` is optimised.
It declares which modules are EMA targets of which online modules; it knows nothing about
optimizers, devices or files (design.md, "The flow of data").
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from jepactl.nn.vit import EncoderConfig


class JEPAMethod(nn.Module):
    """Base class: subclasses implement ``forward(batch) -> {"loss": ..., ...}``."""

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Return (online, target) module pairs updated as target = m*target + (1-m)*online."""
        return []

    def encoder(self, which: str = "target") -> nn.Module:
        """Return the encoder used for evaluation and export (``target`` or ``context``)."""
        raise NotImplementedError

    def export_modules(self) -> dict[str, nn.Module]:
        """Return the modules ``jepactl export --which`` may write."""
        return {"target": self.encoder("target"), "context": self.encoder("context")}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class ContextTargetPredictor(JEPAMethod):
    """The masked-latent-prediction layout shared by I-JEPA, ECG-JEPA and T-JEPA.

    A context encoder, its EMA copy as the target encoder (no gradients), and a narrow
    predictor whose positions come from the encoder's tokenizer.
    """

    def __init__(self, tokenizer_config: dict, model: "EncoderConfig", predictor_dim: int,
                 predictor_depth: int, predictor_heads: int, predictor_mlp_ratio: float | None = None,
                 shared_context: bool = False) -> None:
        super().__init__()
        from jepactl.nn.predictor import MaskedPredictor
        from jepactl.nn.vit import TransformerEncoder

        self.context_encoder = TransformerEncoder(tokenizer_config, model)
        self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
        self.predictor = MaskedPredictor(
            model.embed_dim, predictor_dim, predictor_depth, predictor_heads,
            self.context_encoder.tokenizer.position_table(predictor_dim),
            mlp_ratio=predictor_mlp_ratio or model.mlp_ratio, qkv_bias=model.qkv_bias,
            bias=model.bias, norm_eps=model.norm_eps, shared_context=shared_context)

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.context_encoder, self.target_encoder)]

    def encoder(self, which: str = "target") -> nn.Module:
        return self.target_encoder if which == "target" else self.context_encoder

    def export_modules(self) -> dict[str, nn.Module]:
        return {"target": self.target_encoder, "context": self.context_encoder,
                "predictor": self.predictor}
