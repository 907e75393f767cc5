"""The per-view encoder of seq-JEPA: one vector per view.

``resnet18_cifar`` is the reference's encoder (methods.md section 6): torchvision's ResNet-18
with ``zero_init_residual``, its fc removed (512-d), and for CIFAR-sized images the 3x3 stride-1
stem without max-pool. Here it is timm's ResNet-18 (``zero_init_last``, the same zero-initialised
last BatchNorm of every residual block) with that stem swapped in. ``resnet18`` keeps the
ImageNet stem (7x7 stride 2 + max-pool) for larger images. ``vit`` is the project's ViT
(``model.vit``) with its patch tokens mean-pooled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from jepactl.nn.vit import EncoderConfig, TransformerEncoder

ENCODERS = ("resnet18_cifar", "resnet18", "vit")


@dataclass
class ViewEncoderConfig:
    """The recipe's ``model`` section: the view encoder and the sequence aggregator."""

    encoder: Literal["resnet18_cifar", "resnet18", "vit"] = "resnet18_cifar"
    vit: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(embed_dim=384, depth=6, num_heads=6, patch_size=4)
    )
    action_dim: int = 128  # the action embedding's width (Linear, no bias, + BatchNorm)
    # The aggregator: nn.TransformerEncoder over [agg token, view tokens], post-norm.
    aggregator_depth: int = 3
    aggregator_heads: int = 4
    aggregator_mlp_ratio: float = 4.0
    aggregator_dropout: float = 0.1  # nn.TransformerEncoderLayer's default, kept by the reference
    predictor_hidden: int = 1024  # Linear (no bias) -> BatchNorm -> ReLU -> Linear
    # False: the ablation without action conditioning; tokens are the view embeddings alone and
    # the predictor reads the aggregate alone (same encoder, aggregator depth and budget).
    action_conditioning: bool = True


class ViewEncoder(nn.Module):
    """Images (N, C, H, W) -> embeddings (N, D); ``pooled`` is the same map (evaluation API)."""

    def __init__(self, config: ViewEncoderConfig, channels: int, image_size: int) -> None:
        super().__init__()
        self.kind = config.encoder
        if config.encoder == "vit":
            tokenizer = {"kind": "patch2d", "in_chans": channels, "img_size": image_size}
            self.backbone: nn.Module = TransformerEncoder(tokenizer, config.vit)
            self.dim = config.vit.embed_dim
        else:
            import timm

            self.backbone = timm.create_model(
                "resnet18", pretrained=False, num_classes=0, in_chans=channels
            )
            if config.encoder == "resnet18_cifar":
                self.backbone.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
                nn.init.kaiming_normal_(self.backbone.conv1.weight, mode="fan_out")
                self.backbone.maxpool = nn.Identity()
            self.dim = self.backbone.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "vit":
            return self.backbone(images).mean(dim=1)
        return self.backbone(images)

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images)
