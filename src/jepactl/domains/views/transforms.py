"""Parameterised view transformations whose parameters are seq-JEPA's actions, batched.

Every view of an image is the image under one draw of the enabled transformations; the draw's
parameters are the view's *latent*, and the *relative action* from view j to view k is computed
from the two latents (methods.md section 6: the reference uses parameterised augmentations as the
latents on CIFAR-100; on 3DIEBench the relative rotation rot_j^-1 rot_k).

Latent of a view, per transformation (in this order, concatenated):

* ``rotation``: angle t, uniform in [-max_rotation, max_rotation] degrees; latent (sin t, cos t).
  Relative: (sin(t_k - t_j), cos(t_k - t_j)).
* ``crop``: a square of side fraction s (area s^2 uniform in ``crop_scale``) centred at
  (cx, cy) in [-1, 1] coordinates, drawn so the square lies inside the image; latent
  (cx, cy, log s). Relative: (cx_k - cx_j, cy_k - cy_j, log(s_k / s_j)).
* ``color``: brightness, contrast and saturation factors f uniform in [1 - x, 1 + x] and a hue
  shift h uniform in [-hue, hue] (fraction of the colour wheel); latent (log f_b, log f_c,
  log f_s, h). Relative: the difference of the latents (log-ratios of the factors, the hue
  difference). Greyscale images have no saturation or hue: their colour latent is (log f_b,
  log f_c).

Rotation and crop are one affine map per view (``affine_grid`` + bilinear ``grid_sample``, zero
padding outside the image): output coordinate u reads the input at centre + s R(t) u. Colour
jitter is applied after, in a fixed order (brightness, contrast, saturation, hue) so that the
parameters mean the same for every view; hue rotates the chroma plane of YIQ by 2 pi h, a linear
stand-in for HSV hue shifting that keeps the whole batch in tensor ops. Everything is drawn from
one ``torch.Generator`` per optimizer step, so a resumed run makes the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from jepactl.errors import RecipeError

TRANSFORMS = ("rotation", "crop", "color")

# RGB -> YIQ (NTSC); its inverse maps back. Hue shift = rotation of the (I, Q) plane.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_LUMA = _RGB_TO_YIQ[0]


@dataclass
class ViewsConfig:
    """The recipe's ``views`` section: how many views a sequence has and how they differ."""

    seq_len: int = 3  # M_tr: observed views per sequence (the reference's seq_len); +1 predicted
    transforms: list[str] = field(default_factory=lambda: list(TRANSFORMS))
    max_rotation: float = 180.0  # degrees
    crop_scale: tuple[float, float] = (0.3, 1.0)  # area fraction of the square crop
    brightness: float = 0.4  # SimCLR-style jitter strengths (torchvision ColorJitter)
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1

    def check(self, key: str = "views") -> None:
        """Raise a RecipeError naming the key for a value the transformations cannot use."""
        if self.seq_len < 1:
            raise RecipeError(f"recipe key '{key}.seq_len': must be at least 1, got {self.seq_len}")
        unknown = [name for name in self.transforms if name not in TRANSFORMS]
        if unknown:
            raise RecipeError(
                f"recipe key '{key}.transforms': unknown transformation '{unknown[0]}' "
                f"(known: {', '.join(TRANSFORMS)})"
            )
        if not self.transforms:
            raise RecipeError(
                f"recipe key '{key}.transforms': needs at least one of {', '.join(TRANSFORMS)}"
            )
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise RecipeError(
                f"recipe key '{key}.crop_scale': needs 0 < low <= high <= 1, "
                f"got {list(self.crop_scale)}"
            )
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise RecipeError(f"recipe key '{key}.{name}': must be in [0, 1)")
        if not 0 <= self.hue <= 0.5:
            raise RecipeError(f"recipe key '{key}.hue': must be in [0, 0.5]")


def latent_names(config: ViewsConfig, channels: int) -> list[tuple[str, list[str]]]:
    """Return [(transformation, names of its latent's components)] in latent order."""
    names = {
        "rotation": ["sin", "cos"],
        "crop": ["centre_x", "centre_y", "log_scale"],
        "color": ["log_brightness", "log_contrast"]
        + (["log_saturation", "hue"] if channels == 3 else []),
    }
    return [(t, names[t]) for t in TRANSFORMS if t in config.transforms]


def latent_dim(config: ViewsConfig, channels: int) -> int:
    return sum(len(parts) for _, parts in latent_names(config, channels))


@dataclass
class ViewDraw:
    """One draw of parameters for a batch of views (each tensor has the views' leading shape)."""

    angle: torch.Tensor  # radians
    centre: torch.Tensor  # (..., 2) in [-1, 1]
    scale: torch.Tensor  # side fraction
    factors: torch.Tensor  # (..., 3) brightness, contrast, saturation
    hue: torch.Tensor

    def latent(self, config: ViewsConfig, channels: int) -> torch.Tensor:
        """Return the views' latents (..., latent_dim) in ``latent_names`` order."""
        parts = []
        for name, _ in latent_names(config, channels):
            if name == "rotation":
                parts += [self.angle.sin()[..., None], self.angle.cos()[..., None]]
            elif name == "crop":
                parts += [self.centre, self.scale.log()[..., None]]
            else:
                logs = self.factors.log()
                parts.append(logs if channels == 3 else logs[..., :2])
                if channels == 3:
                    parts.append(self.hue[..., None])
        return torch.cat(parts, dim=-1)


def draw_views(config: ViewsConfig, shape: tuple[int, ...], gen: torch.Generator) -> ViewDraw:
    """Return parameters for views of leading shape ``shape`` (identity for disabled ones)."""
    use = set(config.transforms)
    u = lambda: torch.rand(shape, generator=gen)  # noqa: E731 - a fresh uniform draw
    angle = torch.zeros(shape)
    if "rotation" in use:
        angle = (2 * u() - 1) * math.radians(config.max_rotation)
    scale, centre = torch.ones(shape), torch.zeros(*shape, 2)
    if "crop" in use:
        low, high = config.crop_scale
        scale = (low + (high - low) * u()).sqrt()
        reach = 1 - scale  # the square's centre stays within +-(1 - s) so it fits the image
        centre = torch.stack([(2 * u() - 1) * reach, (2 * u() - 1) * reach], dim=-1)
    factors, hue = torch.ones(*shape, 3), torch.zeros(shape)
    if "color" in use:
        strength = torch.tensor([config.brightness, config.contrast, config.saturation])
        factors = 1 + (2 * torch.rand(*shape, 3, generator=gen) - 1) * strength
        hue = (2 * u() - 1) * config.hue
    return ViewDraw(angle, centre, scale, factors, hue)


def relative_actions(latents: torch.Tensor, config: ViewsConfig, channels: int) -> torch.Tensor:
    """Return the relative action from each view to the next: (B, V, P) -> (B, V - 1, P)."""
    before, after = latents[:, :-1], latents[:, 1:]
    parts, start = [], 0
    for name, components in latent_names(config, channels):
        a = before[..., start : start + len(components)]
        b = after[..., start : start + len(components)]
        if name == "rotation":  # angle difference: sin(b - a), cos(b - a)
            sin_a, cos_a, sin_b, cos_b = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
            parts.append(
                torch.stack([sin_b * cos_a - cos_b * sin_a, cos_b * cos_a + sin_b * sin_a], -1)
            )
        else:  # centres and hue subtract; log scales and log factors subtract to log-ratios
            parts.append(b - a)
        start += len(components)
    return torch.cat(parts, dim=-1)


def apply_views(images: torch.Tensor, draw: ViewDraw) -> torch.Tensor:
    """Return the views (B, V, C, H, W) of ``images`` (B, C, H, W) in [0, 1] under ``draw``."""
    b, c, h, w = images.shape
    v = draw.angle.shape[1]
    cos, sin, s = draw.angle.cos(), draw.angle.sin(), draw.scale
    theta = torch.stack(
        [
            torch.stack([s * cos, -s * sin, draw.centre[..., 0]], dim=-1),
            torch.stack([s * sin, s * cos, draw.centre[..., 1]], dim=-1),
        ],
        dim=-2,
    ).reshape(b * v, 2, 3)
    source = images[:, None].expand(b, v, c, h, w).reshape(b * v, c, h, w)
    grid = F.affine_grid(theta.to(images.dtype), [b * v, c, h, w], align_corners=False)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return jitter(out, draw.factors.reshape(b * v, 3), draw.hue.reshape(b * v)).reshape(
        b, v, c, h, w
    )


def jitter(x: torch.Tensor, factors: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Return ``x`` (N, C, H, W) in [0, 1] with brightness, contrast, saturation, hue applied."""
    f = factors[:, :, None, None, None].to(x.dtype)  # (N, 3, 1, 1, 1)
    x = (x * f[:, 0]).clamp(0, 1)
    grey = _grey(x)
    x = (x - grey.mean((1, 2, 3), keepdim=True)) * f[:, 1] + grey.mean((1, 2, 3), keepdim=True)
    x = x.clamp(0, 1)
    if x.shape[1] != 3:
        return x
    grey = _grey(x)
    x = ((x - grey) * f[:, 2] + grey).clamp(0, 1)
    angle = 2 * math.pi * hue.to(x.dtype)
    cos, sin = angle.cos(), angle.sin()
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    rotate = torch.stack(
        [
            torch.stack([one, zero, zero], -1),
            torch.stack([zero, cos, -sin], -1),
            torch.stack([zero, sin, cos], -1),
        ],
        dim=-2,
    )  # (N, 3, 3) in YIQ
    matrix = _YIQ_TO_RGB.to(x.dtype) @ rotate @ _RGB_TO_YIQ.to(x.dtype)
    return torch.einsum("nij,njhw->nihw", matrix, x).clamp(0, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    return torch.einsum("c,nchw->nhw", _LUMA.to(x.dtype), x)[:, None]
