"""Edits a seller makes to a copied photo to slip it past a duplicate check: turns and crops.

Not part of the benchmark generator (its photos do not change): what the
re-upload tests and ``scripts/eval_dedup.py --transformed`` apply to photos.
"""

from __future__ import annotations

import math

from PIL import Image


def largest_upright_rectangle(width: int, height: int, degrees: float) -> tuple[float, float]:
    """Width and height of the largest axis-aligned rectangle inside a ``width x height`` one turned by ``degrees``."""
    sin, cos = abs(math.sin(math.radians(degrees))), abs(math.cos(math.radians(degrees)))
    long_side, short_side = max(width, height), min(width, height)
    if short_side <= 2 * sin * cos * long_side or abs(sin - cos) < 1e-10:
        half = short_side / 2
        return (half / sin, half / cos) if width >= height else (half / cos, half / sin)
    cos_2a = cos * cos - sin * sin
    return (width * cos - height * sin) / cos_2a, (height * cos - width * sin) / cos_2a


def turn(image: Image.Image, degrees: float, crop_back: bool = False) -> Image.Image:
    """Turned about the centre with black corners, or cropped back to the largest upright rectangle inside."""
    turned = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    if not crop_back:
        return turned
    width, height = (math.floor(side) - 2 for side in largest_upright_rectangle(*image.size, degrees))
    left, top = (turned.width - width) // 2, (turned.height - height) // 2
    return turned.crop((left, top, left + width, top + height))


__all__ = ["largest_upright_rectangle", "turn"]
