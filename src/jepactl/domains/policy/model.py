"""ACT-JEPA's networks: observation encoder, action decoder and latent predictor.

methods.md section 2 (no public code; ACT's defaults where the paper is silent):

* **Observation tokens:** the proprioceptive state projected to one token; with images, a
  ResNet-18 (timm, no pretrained weights here: nothing is downloaded) or, for CPU recipes, a
  four-layer CNN, whose last feature map is projected to ``dim`` and flattened into spatial
  tokens, each with a learned position.
* **Encoder** (context E_theta, and its EMA copy as the target E_theta~): a learned summary
  token plus the observation tokens through a transformer encoder; s_t is the encoder's output
  tokens, the summary token's output is the observation's latent.
* **Action decoder D:** ``chunk`` learned queries cross-attending to s_t (ACT's DETR-style
  decoder, without its CVAE) -> the actions a_t..a_{t+k-1}.
* **Predictor P:** the same shape with its own queries -> the latents of o_{t+1}..o_{t+k},
  regressed onto the target encoder's summary latents (stop-gradient).

Post-norm layers with dropout 0.1, as ACT's DETR transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class PolicyModelConfig:
    """The recipe's ``model`` section (ACT: hidden_dim 512, 8 heads, 4 encoder layers,
    7 decoder layers, feed-forward 3200, dropout 0.1)."""

    dim: int = 512
    heads: int = 8
    encoder_layers: int = 4
    decoder_layers: int = 7  # the action decoder's
    predictor_layers: int = 1  # the latent predictor's (narrow, as JEPA predictors are)
    feedforward: int = 3200
    dropout: float = 0.1
    # Image observations only. small_cnn: four stride-2 3x3 convolutions (16-32-64-128
    # channels, GroupNorm, ReLU), 96 px -> 6 x 6 tokens, about 18 MFLOPs a frame against
    # ResNet-18's 330; a window encodes k + 1 frames, so this is what makes CPU runs possible
    # (1,088 frames: 0.39 s in bf16 on one core; 32-64-128-128 channels took 0.80 s).
    backbone: Literal["resnet18", "small_cnn"] = "resnet18"


class SmallCNN(nn.Module):
    """Four stride-2 convolution blocks; ``num_features`` channels at 1/16 of the input size."""

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, 16, 32, 64, self.num_features]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.GroupNorm(8, c_out),
                nn.ReLU(inplace=True),
            ]
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def image_backbone(name: str) -> nn.Module:
    """Return a feature-map network (B, 3, H, W) -> (B, C, h, w) with ``num_features`` C."""
    if name == "small_cnn":
        return SmallCNN()
    import timm

    return timm.create_model(name, pretrained=False, num_classes=0, global_pool="")


class ObservationEncoder(nn.Module):
    """Observation (state, optional image) -> (tokens (B, 1 + N, D), summary latent (B, D))."""

    def __init__(self, config: PolicyModelConfig, state_dim: int, image_size: int | None) -> None:
        super().__init__()
        d = config.dim
        self.state_proj = nn.Linear(state_dim, d)
        self.summary = nn.Parameter(torch.zeros(1, 1, d))
        positions = 2
        self.backbone = None
        if image_size is not None:
            self.backbone = image_backbone(config.backbone)
            self.image_proj = nn.Conv2d(self.backbone.num_features, d, 1)
            with torch.no_grad():
                grid = self.backbone(torch.zeros(1, 3, image_size, image_size)).shape[-2:]
            positions += grid[0] * grid[1]
        self.position = nn.Parameter(torch.zeros(1, positions, d))
        nn.init.normal_(self.summary, std=0.02)
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d, config.heads, config.feedforward, config.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, config.encoder_layers, enable_nested_tensor=False
        )

    def forward(
        self, state: torch.Tensor, image: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = [self.summary.expand(state.shape[0], -1, -1), self.state_proj(state)[:, None]]
        if self.backbone is not None:
            features = self.image_proj(self.backbone(image))  # (B, D, h, w)
            tokens.append(features.flatten(2).transpose(1, 2))
        x = torch.cat([t.to(tokens[1].dtype) for t in tokens], dim=1) + self.position
        out = self.encoder(x)
        return out, out[:, 0]

    def pooled(self, state: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward(state, image)[1]


class ChunkDecoder(nn.Module):
    """``chunk`` learned queries cross-attending to the encoder's tokens -> (B, chunk, out)."""

    def __init__(self, config: PolicyModelConfig, chunk: int, layers: int, out: int) -> None:
        super().__init__()
        d = config.dim
        self.queries = nn.Parameter(torch.zeros(1, chunk, d))
        nn.init.normal_(self.queries, std=0.02)
        layer = nn.TransformerDecoderLayer(
            d, config.heads, config.feedforward, config.dropout, batch_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.head = nn.Linear(d, out)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(memory.shape[0], -1, -1).to(memory.dtype)
        return self.head(self.decoder(queries, memory))
