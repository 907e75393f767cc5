"""Per-optimizer-step schedules as pure functions of the step, so resume is exact by design."""

from __future__ import annotations

import math

from jepactl.recipe import EmaConfig, OptimConfig


def cosine(progress: float, start: float, end: float) -> float:
    """Return half a cosine from ``start`` (progress 0) to ``end`` (progress 1).

    The one cosine schedule: the trainer's lr and weight decay, and every head trained in
    ``evaluate/`` (few-shot, attentive probe, fine-tuning).
    """
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warmup start_lr -> lr over warmup_steps, then cosine from lr to final_lr."""
    if step < cfg.warmup_steps:
        return cfg.start_lr + (cfg.lr - cfg.start_lr) * step / max(1, cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cosine(min(1.0, progress), cfg.lr, cfg.final_lr)


def weight_decay(step: int, total: int, cfg: OptimConfig) -> float:
    """Cosine from weight_decay to final_weight_decay over the run (I-JEPA's CosineWDSchedule)."""
    return cosine(min(1.0, step / max(1, total)), cfg.weight_decay, cfg.final_weight_decay)


def ema_momentum(step: int, total: int, cfg: EmaConfig) -> float:
    """Linear from start to end over the run."""
    return cfg.start + (cfg.end - cfg.start) * min(1.0, step / max(1, total))
