"""EMA target update with ``torch._foreach`` ops: one fused kernel per dtype, no Python loop."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """Set target = momentum * target + (1 - momentum) * online, parameter by parameter."""
    target_params = list(target.parameters())
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError("EMA target and online module have different parameter counts")
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)
