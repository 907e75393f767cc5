"""seq-JEPA: predict the next view's embedding from a sequence of views and their actions.

Reference: Ghaemi, Muller, Bakhtiari, NeurIPS 2025; hafezgh/seq-jepa ``SeqJEPA_Transforms``
(methods.md section 6). For a sequence of M observed views v_1..v_M and a view to predict
v_{M+1}, with a_j the relative action from v_j to v_{j+1} (transforms.py):

    z_j   = encoder(v_j)                                  # 512-d (ResNet-18)
    e_j   = BatchNorm(Linear(a_j))                        # 128-d, no bias, BN without affine
    t_j   = concat(z_j, e_j) for j < M;  t_M = concat(z_M, 0)
    agg   = TransformerEncoder([agg_token, t_1..t_M])[0]  # 3 layers, 4 heads, post-norm: 640-d
    pred  = Linear(1024) -> BN -> ReLU -> Linear(512) of concat(agg, e_M)
    loss  = 1 - cos(pred, stop_grad(ema_encoder(v_{M+1})))

``agg`` is the invariant representation (classification); ``z`` is the equivariant one (the
relative action can be read back from two views' z). ``model.action_conditioning: false`` is
the paper's ablation: the tokens are the z_j alone and the predictor reads agg alone. The EMA
(constant 0.996) updates the encoder only. Optimisation as the reference's code really runs:
Adam without weight decay, warmup from 1e-5 to 4e-4, then constant (its per-epoch lr reset
overrides the cosine schedule).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from jepactl.data.images import has_split as images_have_split
from jepactl.data.images import open_images
from jepactl.data.synthetic import SyntheticTensors
from jepactl.domains.views.encoders import ViewEncoder, ViewEncoderConfig
from jepactl.domains.views.probe import SeqProbeConfig, run_probe
from jepactl.domains.views.sequences import (
    BaseImages,
    SeqDataConfig,
    SequenceCollate,
    SequencePretrainDataset,
)
from jepactl.domains.views.transforms import ViewsConfig, latent_dim
from jepactl.errors import DataError, UserError
from jepactl.methods.base import JEPAMethod, MethodSpec, PretrainData
from jepactl.methods.losses import regression_loss
from jepactl.recipe import EmaConfig, LossConfig, OptimConfig, Recipe, TrainConfig


@dataclass
class SeqJEPARecipe(Recipe):
    """Defaults: the reference's CIFAR-100 run (scripts/script_transformed_views.sh)."""

    domain: str = "views"
    method: str = "seq-jepa"
    data: SeqDataConfig = field(default_factory=SeqDataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ViewEncoderConfig = field(default_factory=ViewEncoderConfig)
    # Adam (wd 0), warmup 20 epochs (CIFAR-100: 50,000 / 256 = 196 steps each) from 1e-5 to
    # 4e-4, then constant: final_lr = lr.
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=4e-4,
            start_lr=1e-5,
            final_lr=4e-4,
            warmup_steps=3920,
            weight_decay=0.0,
            final_weight_decay=0.0,
        )
    )
    ema: EmaConfig = field(default_factory=lambda: EmaConfig(start=0.996, end=0.996))
    loss: LossConfig = field(default_factory=lambda: LossConfig(kind="cosine", target_norm="none"))
    # 2000 epochs of CIFAR-100 at batch 256.
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(batch_size=256, max_steps=392_000, precision="bf16")
    )
    probe: SeqProbeConfig = field(default_factory=SeqProbeConfig)


class ActionEmbedding(nn.Module):
    """Relative actions (..., P) -> (..., A): Linear without bias, BatchNorm without affine."""

    def __init__(self, actions: int, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(actions, dim, bias=False)
        self.norm = nn.BatchNorm1d(dim, affine=False)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        flat = actions.reshape(-1, actions.shape[-1]).to(self.linear.weight.dtype)
        return self.norm(self.linear(flat)).reshape(*actions.shape[:-1], -1)


class SeqJEPA(JEPAMethod):
    def __init__(self, recipe: SeqJEPARecipe) -> None:
        super().__init__()
        recipe.views.check()
        cfg = recipe.model
        self.conditioned = cfg.action_conditioning
        self.online_encoder = ViewEncoder(cfg, recipe.data.channels, recipe.data.image_size)
        self.target_encoder = copy.deepcopy(self.online_encoder).requires_grad_(False)
        dim = self.online_encoder.dim
        act = cfg.action_dim if self.conditioned else 0
        self.action_embedding = (
            ActionEmbedding(latent_dim(recipe.views, recipe.data.channels), cfg.action_dim)
            if self.conditioned
            else None
        )
        width = dim + act
        self.agg_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.agg_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            cfg.aggregator_heads,
            int(width * cfg.aggregator_mlp_ratio),
            dropout=cfg.aggregator_dropout,
            batch_first=True,
            norm_first=False,
        )
        self.aggregator = nn.TransformerEncoder(
            layer, cfg.aggregator_depth, enable_nested_tensor=False
        )
        self.predictor = nn.Sequential(
            nn.Linear(width + act, cfg.predictor_hidden, bias=False),
            nn.BatchNorm1d(cfg.predictor_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.predictor_hidden, dim),
        )
        self.loss_kind = recipe.loss.kind

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.online_encoder, self.target_encoder)]

    def encoder(self, which: str = "target") -> nn.Module:
        return self.target_encoder if which == "target" else self.online_encoder

    def aggregate(self, embeddings: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Return the aggregate representation (B, D + A) of view embeddings (B, M, D).

        ``actions`` (B, M - 1, P): the relative action from each observed view to the next; the
        last view's action slot is zero (it is filled by the predictor's action instead).
        """
        tokens = embeddings
        if self.action_embedding is not None:
            b, m, _ = embeddings.shape
            slots = embeddings.new_zeros(b, m, self.action_embedding.linear.out_features)
            if m > 1:
                slots[:, : m - 1] = self.action_embedding(actions[:, : m - 1]).to(slots.dtype)
            tokens = torch.cat([embeddings, slots], dim=-1)
        agg = self.agg_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        return self.aggregator(torch.cat([agg, tokens], dim=1))[:, 0]

    def represent(self, views: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Return the aggregate representation of views (B, M, C, H, W) (online encoder)."""
        b, m = views.shape[:2]
        embeddings = self.online_encoder(views.flatten(0, 1)).reshape(b, m, -1)
        return self.aggregate(embeddings, actions)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        views, actions = batch["views"], batch["actions"]
        m = views.shape[1] - 1
        agg = self.represent(views[:, :m], actions)
        reads = agg
        if self.action_embedding is not None:
            last = self.action_embedding(actions[:, m - 1]).to(agg.dtype)
            reads = torch.cat([agg, last], dim=-1)
        predicted = self.predictor(reads)
        with torch.no_grad():
            # In the trainer's train mode, as the reference: the EMA copy's BatchNorm normalises
            # with the batch's statistics (EMA updates parameters, not BN running statistics).
            target = self.target_encoder(views[:, m])
        loss = regression_loss(predicted.float(), target.float(), self.loss_kind)
        return {"loss": loss, "embeddings": agg.detach()}


def build(recipe: SeqJEPARecipe) -> SeqJEPA:
    return SeqJEPA(recipe)


def pretrain_data(recipe: SeqJEPARecipe, path: str | None) -> PretrainData:
    """Return (base images indexed by SampleKey, the sequence collate, source)."""
    recipe.views.check()
    if path is None:
        raise UserError("no data: pass --data PATH (or set data.path in the recipe)")
    source = open_images(path, None, recipe.data.image_column, recipe.data.label_column)
    if len(source) < recipe.train.batch_size:
        raise DataError(
            f"data '{path}' has {len(source)} images, fewer than one batch "
            f"(train.batch_size={recipe.train.batch_size})"
        )
    dataset = SequencePretrainDataset(source, recipe.data)
    return PretrainData(dataset, SequenceCollate(recipe.views, recipe.data), source)


def synthetic_data(recipe: SeqJEPARecipe):
    """Return (uniform random images of the recipe's shape, the sequence collate) for bench."""
    shape = (recipe.data.channels, recipe.data.image_size, recipe.data.image_size)
    return SyntheticTensors("images", shape, uniform=True), SequenceCollate(
        recipe.views, recipe.data
    )


def eval_data(
    recipe: SeqJEPARecipe,
    path: str,
    split: str | None,
    augment: bool = False,
    seed: int = 0,
    labels: str | None = None,
):
    """Return labelled base images ``i -> (image in [0, 1], label)``; the probe makes views."""
    source = open_images(path, split, recipe.data.image_column, recipe.data.label_column)
    if labels is not None:
        from jepactl.data.images import with_label_file

        source = with_label_file(source, labels, path)
    return BaseImages(source, recipe.data)


def has_split(recipe: SeqJEPARecipe, path: str, split: str) -> bool:
    return images_have_split(path, split)


SPEC = MethodSpec(
    "seq-jepa",
    SeqJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    run_probe=run_probe,
    label_file="file,label",
)
