"""The built-in ``shapes`` data set: 32x32 colour images of six shapes, drawn from a seed.

It ships as code, not files, so the README's first command trains and probes with no download
and no licence question. Position, size, rotation and colours vary per image, so a probe has
to read shape, not a pixel statistic, to classify it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES_CLASSES = ("circle", "square", "triangle", "cross", "ring", "diamond")
SIZE = 32


def _polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> list[tuple]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / sides),
            cy + radius * math.sin(angle + 2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


def render_shape(label: int, seed: int) -> Image.Image:
    """Return one RGB image of shape ``SHAPES_CLASSES[label]``, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, 3)
    foreground = (background + rng.integers(80, 176, 3)) % 256  # always contrasts
    canvas = np.clip(background + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    radius = rng.uniform(6, 11)
    cx, cy = rng.uniform(radius + 1, SIZE - radius - 1, 2)
    angle = rng.uniform(0, 2 * math.pi)
    fill = tuple(int(c) for c in foreground)
    name = SHAPES_CLASSES[label]
    if name == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, radius * 1.2, 4, angle), fill=fill)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, radius * 1.3, 3, angle), fill=fill)
    elif name == "cross":
        for a in (angle, angle + math.pi / 2):
            dx, dy = math.cos(a) * radius, math.sin(a) * radius
            draw.line(
                [cx - dx, cy - dy, cx + dx, cy + dy], fill=fill, width=max(2, int(radius / 2.5))
            )
    elif name == "ring":
        width = max(2, int(radius / 3))
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius], outline=fill, width=width
        )
    elif name == "diamond":
        pts = [
            (cx + radius * 1.3 * math.cos(angle), cy + radius * 1.3 * math.sin(angle)),
            (cx - radius * 0.6 * math.sin(angle), cy + radius * 0.6 * math.cos(angle)),
            (cx - radius * 1.3 * math.cos(angle), cy - radius * 1.3 * math.sin(angle)),
            (cx + radius * 0.6 * math.sin(angle), cy - radius * 0.6 * math.cos(angle)),
        ]
        draw.polygon(pts, fill=fill)
    return img
