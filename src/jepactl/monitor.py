"""Collapse monitors computed from a batch of pooled embeddings (B, D) at log steps."""

from __future__ import annotations

import torch


@torch.no_grad()
def collapse_stats(embeddings: torch.Tensor) -> dict[str, float]:
    """Return the mean per-dimension std and the effective rank of ``embeddings`` (B, D).

    Effective rank (Roy & Vetterli 2007) is exp of the entropy of the normalised singular
    values of the centred batch: D for isotropic features, 1 for a collapsed line. A
    representation collapsing to a constant shows std -> 0 first.
    """
    x = embeddings.float()
    if x.shape[0] < 2:
        return {}
    std = x.std(dim=0).mean().item()
    centred = x - x.mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    total = singular.sum()
    if total <= 0:
        return {"embed_std": std, "effective_rank": 0.0}
    p = singular / total
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"embed_std": std, "effective_rank": float(torch.exp(entropy))}
