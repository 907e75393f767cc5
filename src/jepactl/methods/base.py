"""The contract between a method and the trainer.

A method owns its modules and maps a batch to a dict of scalars whose ``"loss"`` is optimised.
It declares which modules are EMA targets of which online modules; it knows nothing about
optimizers, devices or files (design.md, "The flow of data").
"""

from __future__ import annotations

import torch
from torch import nn


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
