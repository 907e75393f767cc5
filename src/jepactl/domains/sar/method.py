"""SAR-JEPA: predict the multi-scale gradient-by-ratio of masked patches in local windows.

Reference: Li et al., "Predicting Gradient is Better" (ISPRS J. 2024, arXiv 2311.15153),
waterdisappear/SAR-JEPA Pretraining/models_lomar.py (methods.md §3). Despite the name it has no
EMA teacher: the target is a fixed hand-crafted feature of the input, the masking is LoMaR's
(4 windows of 7x7 patches, 80% of each replaced by a mask token, the encoder sees the whole
window), a narrow decoder maps the window's tokens to each patch's target and the loss is the
MSE on masked patches only.

``target.kind`` selects the paper's ablations at the same model, masking and budget:

* ``gradient`` (SAR-JEPA): concat over scales of the patchified gradient-by-ratio maps
  (``domains/sar/gradient_targets.py``; ``target.gradient_kernel: gaussian`` for the Gaussian
  variant).
* ``pixels`` (MAE-style): the patch's raw pixels (``target.normalize_pixels`` = MAE's
  norm_pix_loss).
* ``ema`` (I-JEPA-style): the LayerNorm-ed tokens of an EMA copy of the encoder that sees the
  whole image; the EMA schedule comes from the recipe's ``ema`` section.

Deviations from the reference, all recorded in recipes/sar/default.yaml: fixed 2-D sin-cos
absolute positions (the reference uses iRPE relative positions, no absolute ones), features
for probing are mean-pooled tokens (the reference has a cls token), window corners are drawn
per sample (masks/local_windows.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from jepactl.domains.sar.chips import (
    SarAugmentDataset,
    SarDataConfig,
    SarEvalDataset,
    SarPretrainDataset,
    open_chips,
)
from jepactl.domains.sar.chips import has_split as _has_split
from jepactl.domains.sar.gradient_targets import SAR_GRADIENT_SCALES, GradientByRatio, patchify
from jepactl.errors import RecipeError, UserError
from jepactl.evaluate.fewshot import FewShotProbeConfig, run_fewshot_probe
from jepactl.masks import LocalWindowMask, LocalWindowMaskConfig, LocalWindowMasks, MaskingCollate
from jepactl.methods.base import JEPAMethod, MethodSpec, PretrainData
from jepactl.methods.losses import regression_loss
from jepactl.methods.probe_request import ProbeRequest
from jepactl.nn.vit import (
    EncoderConfig,
    TransformerEncoder,
    gather_tokens,
    init_transformer_weights,
    layer_norm_targets,
    make_blocks,
    run_blocks,
)
from jepactl.recipe import LossConfig, OptimConfig, Recipe


@dataclass
class SarTargetConfig:
    kind: Literal["gradient", "pixels", "ema"] = "gradient"
    gradient_scales: tuple[int, ...] = SAR_GRADIENT_SCALES  # radii r: kernels of 2r+1 px
    gradient_kernel: Literal["box", "gaussian"] = "box"
    normalize_pixels: bool = False  # kind: pixels; MAE's norm_pix_loss (off in SAR-JEPA)


@dataclass
class WindowDecoderConfig:
    """SAR-JEPA's decoder (encoder_pred + 8 blocks of 512, 16 heads + decoder_pred)."""

    embed_dim: int = 512
    depth: int = 8
    num_heads: int = 16


@dataclass
class SarJEPARecipe(Recipe):
    domain: str = "sar"
    method: str = "sar-jepa"
    data: SarDataConfig = field(default_factory=SarDataConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: WindowDecoderConfig = field(default_factory=WindowDecoderConfig)
    mask: LocalWindowMaskConfig = field(default_factory=LocalWindowMaskConfig)
    target: SarTargetConfig = field(default_factory=SarTargetConfig)
    # MAE/LoMaR optimisation: AdamW (0.9, 0.95), wd 0.05, warmup then cosine to 0.
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1.5e-4,
            start_lr=0.0,
            final_lr=0.0,
            warmup_steps=100,
            weight_decay=0.05,
            final_weight_decay=0.05,
            betas=(0.9, 0.95),
        )
    )
    loss: LossConfig = field(default_factory=lambda: LossConfig(kind="mse", target_norm="none"))
    probe: FewShotProbeConfig = field(default_factory=FewShotProbeConfig)


def tokenizer_config(recipe: SarJEPARecipe) -> dict:
    return {"kind": "patch2d", "in_chans": 1, "img_size": recipe.data.image_size}


class WindowDecoder(nn.Module):
    """Encoder tokens of a window -> per-patch target vectors (positions re-added at width d)."""

    def __init__(
        self,
        encoder_dim: int,
        config: WindowDecoderConfig,
        position_table: torch.Tensor,
        out_dim: int,
        mlp_ratio: float,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_dim, config.embed_dim)
        self.register_buffer("pos_embed", position_table, persistent=False)
        self.blocks = make_blocks(
            config.embed_dim, config.depth, config.num_heads, mlp_ratio, True, True, 0.0, norm_eps
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=norm_eps)
        self.proj = nn.Linear(config.embed_dim, out_dim)
        self.activation_checkpointing = False
        init_transformer_weights(self, self.blocks)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Return (S, n, out) for window tokens (S, n, D) at raster positions (S, n)."""
        pos = self.pos_embed.to(tokens.dtype)[positions]
        x = run_blocks(self.blocks, self.embed(tokens) + pos, None, self.activation_checkpointing)
        return self.proj(self.norm(x))


class SarJEPA(JEPAMethod):
    def __init__(self, recipe: SarJEPARecipe) -> None:
        super().__init__()
        self.target_config = recipe.target
        self.loss_config = recipe.loss
        self.patch_size = recipe.model.patch_size
        self.context_encoder = TransformerEncoder(tokenizer_config(recipe), recipe.model)
        dim = recipe.model.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        kind = recipe.target.kind
        self.gradient = None
        self.target_encoder = None
        if kind == "gradient":
            self.gradient = GradientByRatio(
                recipe.target.gradient_scales, recipe.target.gradient_kernel
            )
            out_dim = len(recipe.target.gradient_scales) * self.patch_size**2
        elif kind == "pixels":
            out_dim = self.patch_size**2
        else:
            self.target_encoder = copy.deepcopy(self.context_encoder).requires_grad_(False)
            out_dim = dim
        # The gradient operator needs the amplitude the chip was read with, not the model input.
        data = recipe.data
        self.intensity = (data.mean, data.std) if data.intensity == "mean_std" else None
        self.decoder = WindowDecoder(
            dim,
            recipe.predictor,
            self.context_encoder.tokenizer.position_table(recipe.predictor.embed_dim),
            out_dim,
            recipe.model.mlp_ratio,
            recipe.model.norm_eps,
        )

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        if self.target_encoder is None:
            return []
        return [(self.context_encoder, self.target_encoder)]

    def encoder(self, which: str = "target") -> nn.Module:
        if which == "target" and self.target_encoder is not None:
            return self.target_encoder
        return self.context_encoder  # without an EMA copy both names mean the one encoder

    def export_modules(self) -> dict[str, nn.Module]:
        return {"target": self.encoder("target"), "context": self.context_encoder}

    def encode_windows(self, images: torch.Tensor, masks: LocalWindowMasks) -> torch.Tensor:
        """Return encoder outputs (B*W, n, D) of each window, masked patches as mask tokens."""
        enc = self.context_encoder
        pos = enc.pos_embed.to(images.dtype)
        tokens = enc.tokenizer(images) + pos  # (B, N, D)
        windows = gather_tokens(tokens, masks.windows)  # (B, W, n, D)
        fill = self.mask_token.to(windows.dtype) + pos[masks.windows]
        windows = torch.where(masks.masked[..., None], fill, windows)
        x = windows.flatten(0, 1)
        prefix = 0
        if enc.registers is not None:
            prefix = enc.registers.shape[1]
            x = torch.cat([enc.registers.expand(x.shape[0], -1, -1), x], dim=1)
        x = enc.norm(run_blocks(enc.blocks, x, None, enc.activation_checkpointing))
        return x[:, prefix:]

    @torch.no_grad()
    def patch_targets(self, images: torch.Tensor) -> torch.Tensor:
        """Return per-patch targets (B, N, out) for the whole image, in float32."""
        kind = self.target_config.kind
        if kind == "ema":
            self.target_encoder.eval()
            full = self.target_encoder(images).float()
            return (
                layer_norm_targets(full) if self.loss_config.target_norm == "layer_norm" else full
            )
        with torch.autocast(images.device.type, enabled=False):  # log-ratios need fp32
            amplitude = images.float()
            if self.intensity is not None:
                amplitude = amplitude * self.intensity[1] + self.intensity[0]
            if kind == "gradient":
                return patchify(self.gradient(amplitude), self.patch_size)
            pixels = patchify(amplitude, self.patch_size)
            if self.target_config.normalize_pixels:
                mean, var = pixels.mean(-1, keepdim=True), pixels.var(-1, keepdim=True)
                pixels = (pixels - mean) / (var + 1e-6).sqrt()
            return pixels

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["images"]
        masks = LocalWindowMasks(batch["windows"], batch["masked"])
        batch_size, count, per_window = masks.windows.shape
        targets = self.patch_targets(images)  # (B, N, out)
        encoded = self.encode_windows(images, masks)  # (B*W, n, D)
        predicted = self.decoder(encoded, masks.windows.flatten(0, 1))  # (B*W, n, out)
        masked = masks.masked.flatten(0, 1)
        wanted = gather_tokens(targets, masks.windows).flatten(0, 1)
        loss = regression_loss(predicted[masked].float(), wanted[masked], self.loss_config.kind)
        return {"loss": loss, "embeddings": encoded.mean(dim=1).detach().float()}


def build(recipe: SarJEPARecipe) -> SarJEPA:
    if recipe.target.kind == "gradient" and recipe.data.image_size <= max(
        recipe.target.gradient_scales
    ):
        raise RecipeError(
            f"data.image_size={recipe.data.image_size} must exceed the largest "
            f"target.gradient_scales radius ({max(recipe.target.gradient_scales)})"
        )
    return SarJEPA(recipe)


def masking_collate(recipe: SarJEPARecipe) -> MaskingCollate:
    """Return the collate that stacks chips and draws LoMaR windows on the patch grid."""
    try:
        return MaskingCollate("images", LocalWindowMask(_grid(recipe), recipe.mask))
    except ValueError as err:
        raise RecipeError(str(err)) from None


def _grid(recipe: SarJEPARecipe) -> tuple[int, int]:
    size, patch = recipe.data.image_size, recipe.model.patch_size
    if size % patch:
        raise RecipeError(f"data.image_size={size} is not divisible by model.patch_size={patch}")
    return size // patch, size // patch


def pretrain_data(recipe: SarJEPARecipe, path: str | None):
    """Return (dataset indexed by SampleKey, collate, source); labels are never used."""
    if path is None:
        raise UserError("no data: pass --data PATH (a folder of SAR chips)")
    split = recipe.data.pretrain_split if _has_split(path, recipe.data.pretrain_split) else None
    source = open_chips(path, split, recipe.data.crop_size)
    collate = masking_collate(recipe)
    return PretrainData(SarPretrainDataset(source, recipe.data), collate, source)


def eval_data(
    recipe: SarJEPARecipe,
    path: str,
    split: str | None,
    augment: bool = False,
    seed: int = 0,
    labels: str | None = None,
):
    """Return a labelled dataset ``i -> (chip tensor, label)`` with ``.labels`` and ``.classes``.

    ``labels``: a ``file,label`` CSV replacing the class folders (``jepactl probe --labels``).
    """
    source = open_chips(path, split, recipe.data.crop_size)
    if labels is not None:
        from jepactl.domains.sar.chips import with_label_file

        source = with_label_file(source, labels, path)
    if augment:
        return SarAugmentDataset(source, recipe.data, seed)
    return SarEvalDataset(source, recipe.data)


def has_split(recipe: SarJEPARecipe, path: str, split: str) -> bool:
    return _has_split(path, split)


def run_probe(request: ProbeRequest, recipe: SarJEPARecipe) -> dict:
    """Few-shot probe (``--shots K --seeds S --head linear|finetune|all``), SAR-JEPA's protocol."""
    return run_fewshot_probe(request, recipe)


def synthetic_data(recipe: SarJEPARecipe):
    """Return (U(0,1) chips of the recipe's size, collate) for ``jepactl bench``.

    Non-negative like amplitudes: the gradient targets take log ratios of window sums.
    """
    from jepactl.data.synthetic import SyntheticTensors

    size = recipe.data.image_size
    return SyntheticTensors("images", (1, size, size), uniform=True), masking_collate(recipe)


SPEC = MethodSpec(
    "sar-jepa",
    SarJEPARecipe,
    build=build,
    pretrain_data=pretrain_data,
    eval_data=eval_data,
    has_split=has_split,
    synthetic_data=synthetic_data,
    run_probe=run_probe,
    label_file="file,label",
)
