"""Feature-subset masks for tables (T-JEPA's MaskCollator), a whole batch with tensor ops.

T-JEPA (Thimonier et al., ICLR 2025; jose-melo/t-jepa src/mask.py, methods.md §9) adapts
I-JEPA's blocks to feature subsets: per batch it draws a context size and a target size from
shares of the F features, re-drawing until the context and one target fit side by side; per
sample the context is a random subset of features and each of the ``num_targets`` target sets
is a random subset of the *remaining* features (target sets may overlap each other).

Indices here count feature tokens only. The reference indexes a sequence that starts with the
[REG]/[CLS] tokens (methods.md quirk); in jepactl those tokens are the encoder's registers,
prepended inside the encoder, so they are always in the context and never a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FeatureMaskConfig:
    num_targets: int = 4
    # Shares of the F features (T-JEPA's jannis defaults, methods.md §9).
    context_share: tuple[float, float] = (0.136, 0.368)
    target_share: tuple[float, float] = (0.156, 0.622)
    tries: int = 20  # re-draws of the two sizes before they are clipped to fit


@dataclass
class FeatureMasks:
    context: torch.Tensor  # (B, C) long feature indices
    targets: torch.Tensor  # (B, M, T) long feature indices, disjoint from the row's context


def _size_range(num_features: int, share: tuple[float, float]) -> tuple[int, int]:
    low = max(1, round(num_features * share[0]))
    high = max(low, round(num_features * share[1]))
    return low, high


class FeatureSubsetMask:
    """Samples one context subset and ``num_targets`` target subsets per row of a batch."""

    def __init__(self, num_features: int, config: FeatureMaskConfig) -> None:
        if num_features < 2:
            raise ValueError("feature-subset masking needs at least 2 features")
        self.num_features = num_features
        self.config = config

    def sizes(self, gen: torch.Generator) -> tuple[int, int]:
        """Return (context size, target size) for one batch, with context + target <= F."""
        f = self.num_features
        c_low, c_high = _size_range(f, self.config.context_share)
        t_low, t_high = _size_range(f, self.config.target_share)
        for _ in range(self.config.tries):
            n_ctx = int(torch.randint(c_low, c_high + 1, (), generator=gen))
            n_trgt = int(torch.randint(t_low, t_high + 1, (), generator=gen))
            if n_ctx + n_trgt <= f:
                return n_ctx, n_trgt
        # Terminate always (tiny tables can make the ranges incompatible): keep the context,
        # give the targets what is left.
        n_ctx = min(n_ctx, f - 1)
        return n_ctx, min(n_trgt, f - n_ctx)

    def __call__(self, batch: int, gen: torch.Generator) -> FeatureMasks:
        n_ctx, n_trgt = self.sizes(gen)
        order = torch.rand(batch, self.num_features, generator=gen).argsort(dim=1)
        context, rest = order[:, :n_ctx], order[:, n_ctx:]
        # Independent random subsets of the remaining features for each target set.
        picks = torch.rand(batch, self.config.num_targets, rest.shape[1], generator=gen).argsort(
            dim=2
        )[..., :n_trgt]
        targets = torch.gather(rest[:, None, :].expand(-1, self.config.num_targets, -1), 2, picks)
        return FeatureMasks(context=context, targets=targets)
