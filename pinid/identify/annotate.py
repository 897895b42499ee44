"""Draw what was found on the photo: each pin's outline, name and confidence."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .._atomic import write_file_atomically
from .confidence import percent
from ..errors import InputError
from ..images import ImageSource, load_image
from ..results import Found

_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]


def annotate(photo: ImageSource, found: Sequence[Found]) -> Image.Image:
    """A copy of the photo with every found pin outlined and labelled."""
    image = load_image(photo).copy()
    draw = ImageDraw.Draw(image)
    line = max(2, round(max(image.size) / 400))
    font = _font(max(12, round(max(image.size) / 50)))
    for number, item in enumerate(found):
        colour = _COLOURS[number % len(_COLOURS)]
        points = [tuple(map(float, p)) for p in item.polygon]
        draw.line(points + [points[0]], fill=colour, width=line, joint="curve")
        name = item.match.name if item.match.name == item.match.pin_id else f"{item.match.name} ({item.match.pin_id})"
        label = f"{name} {percent(item.confidence)}"
        x, y = min(p[0] for p in points), min(p[1] for p in points)
        box = draw.textbbox((0, 0), label, font=font)
        width, height = box[2] - box[0] + 2 * line, box[3] - box[1] + 2 * line
        x = min(max(0.0, x), max(0.0, image.width - width))
        y = y - height if y - height >= 0 else min(image.height - height, max(p[1] for p in points))
        draw.rectangle([x, y, x + width, y + height], fill=colour)
        draw.text((x + line - box[0], y + line - box[1]), label, fill=(255, 255, 255), font=font)
    return image


def write_annotated(photo: ImageSource, found: Sequence[Found], out: str | Path) -> Path:
    """Write the annotated photo as PNG (atomically: a failed write leaves no half file)."""
    target = Path(out)
    if not target.parent.is_dir():
        raise InputError(f"cannot write {target}: folder {target.parent} does not exist")
    buffer = io.BytesIO()
    annotate(photo, found).save(buffer, format="PNG")
    write_file_atomically(target, buffer.getvalue())
    return target


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()
