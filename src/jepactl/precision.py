"""Mixed precision: the one place that turns a recipe's ``train.precision`` into a context."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device | str, precision: str):
    """Return bf16 autocast on ``device`` when ``precision`` is "bf16", else a null context.

    The context may be entered again and again (the trainer keeps one for every step).
    """
    device_type = device if isinstance(device, str) else device.type
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
