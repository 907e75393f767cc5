"""The attentive probe of ECG-JEPA (from V-JEPA's AttentivePooler) and the loop that trains heads.

``AttentiveClassifier``: one learned query cross-attends to the encoder's tokens, passes a
pre-norm MLP block and a linear layer to the classes. It is the paper's "linear" evaluation
protocol (frozen encoder, 5k steps, AdamW lr 1e-3 constant, wd 0.1, grad clip 1.0), and the
head of fine-tuning, where the encoder trains with it.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from jepactl.nn.attention import scaled_dot_product_attention
from jepactl.precision import autocast as autocast_for
from jepactl.schedules import cosine


class AttentiveClassifier(nn.Module):
    """Tokens (B, N, D) -> logits (B, classes) through one cross-attention query."""

    def __init__(self, dim: int, num_heads: int, classes: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_tokens = nn.LayerNorm(dim, eps=1e-6)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.head = nn.Linear(dim, classes)
        nn.init.trunc_normal_(self.query, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, _, dim = tokens.shape
        heads = self.num_heads
        kv = self.to_kv(self.norm_tokens(tokens)).reshape(batch, -1, 2, heads, dim // heads)
        k, v = kv.permute(2, 0, 3, 1, 4)
        q = self.to_q(self.query).reshape(1, heads, 1, dim // heads).expand(batch, -1, -1, -1)
        pooled = scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, 1, dim)
        x = self.query + self.proj(pooled)
        x = x + self.mlp(self.norm_mlp(x))
        return self.head(x[:, 0])


def classification_loss(
    multilabel: bool, class_weights: torch.Tensor | None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return BCE for multi-label targets, else (class-weighted) cross-entropy."""
    if multilabel:
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y.float())
    return lambda logits, y: F.cross_entropy(logits.float(), y, weight=class_weights)


def balanced_class_weights(labels: torch.Tensor, classes: int, most: float = 10.0) -> torch.Tensor:
    """Return weights n / (k * n_c), at most ``most``, so classes count about equally (0: absent).

    The cap matters for classes of a handful of samples (MIT-BIH DS1 has 8 Q beats): uncapped,
    their weight (~100x) makes every gradient step about those few windows and training
    diverges to predicting one class.
    """
    counts = torch.bincount(labels, minlength=classes).float()
    present = counts > 0
    weights = torch.zeros(classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.clamp(max=most)


def train_classifier(
    model: nn.Module,
    batches: Callable[[torch.Generator], tuple],
    loss_fn: Callable,
    steps: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int = 0,
    final_lr: float | None = None,
    grad_clip: float = 1.0,
    seed: int = 0,
    precision: str = "bf16",
) -> nn.Module:
    """Train ``model`` for ``steps`` AdamW steps on ``batches(gen) -> (inputs, targets)``.

    The learning rate warms up linearly over ``warmup_steps``, then stays constant (``final_lr``
    None: the attentive probe) or follows a cosine to ``final_lr`` (fine-tuning).
    """
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    device = next(model.parameters()).device
    autocast = autocast_for(device, precision)
    model.train()
    for step in range(steps):
        if step < warmup_steps:
            rate = lr * (step + 1) / warmup_steps
        elif final_lr is None:
            rate = lr
        else:
            rate = cosine((step - warmup_steps) / max(1, steps - warmup_steps), lr, final_lr)
        for group in optimizer.param_groups:
            group["lr"] = rate
        inputs, targets = batches(gen)
        with autocast:
            logits = model(inputs.to(device))
        loss = loss_fn(logits, targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
    return model.eval()
