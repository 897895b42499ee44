"""Draw what was found on the photo: each pin's outline, name and confidence."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw, ImageFont

from .._atomic import check_file_target, probe_writable, write_file_atomically
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
        label = _fitting_label(draw, font, item.match.name, item.match.pin_id, percent(item.confidence),
                               image.width - 2 * line)
        x, y = min(p[0] for p in points), min(p[1] for p in points)
        box = draw.textbbox((0, 0), label, font=font)
        width, height = box[2] - box[0] + 2 * line, box[3] - box[1] + 2 * line
        x = min(max(0.0, x), max(0.0, image.width - width))
        y = y - height if y - height >= 0 else min(image.height - height, max(p[1] for p in points))
        draw.rectangle([x, y, x + width, y + height], fill=colour)
        draw.text((x + line - box[0], y + line - box[1]), label, fill=(255, 255, 255), font=font)
    return image


def _fitting_label(draw: ImageDraw.ImageDraw, font: Any, name: str, pin_id: str, confidence: str,
                   width: float) -> str:
    """``name (pin_id) confidence``, or as much of it as fits in ``width`` pixels: the name goes first (the
    pin id says which pin), then the id is cut short; long OpenMoji names ran off a narrow photo's edge."""
    full = f"{name} {confidence}" if name == pin_id else f"{name} ({pin_id}) {confidence}"
    shorter = (f"{pin_id[:keep]}... {confidence}" for keep in range(len(pin_id) - 1, 0, -1))
    for text in (full, f"{pin_id} {confidence}", *shorter):
        box = draw.textbbox((0, 0), text, font=font)
        if box[2] - box[0] <= width:
            return text
    return confidence


def check_annotation_target(out: str | os.PathLike, photo: ImageSource | None = None) -> Path:
    """Where the annotation will be written (symlinks resolved), or ``InputError`` before any work.

    Refused: an empty name; anything existing that is not a regular file (a
    folder, a device such as ``/dev/full``, a fifo); the input ``photo`` itself,
    under any name (the same file, found by device and inode); a folder that
    does not exist or where nothing can be created (``/proc``).
    """
    if not os.fspath(out):
        raise InputError("--annotate needs a file name (e.g. --annotate found.png)")
    target = check_file_target(Path(out))
    if isinstance(photo, (str, os.PathLike)) and target.exists():
        try:
            same = os.path.samefile(target, photo)
        except OSError:
            same = False
        if same:
            raise InputError(f"cannot write {out}: it is the input photo; choose another file name")
    if not target.parent.is_dir():
        raise InputError(f"cannot write {out}: folder {target.parent} does not exist")
    probe_writable(target.parent, str(out))
    return target


def write_annotated(photo: ImageSource, found: Sequence[Found], out: str | os.PathLike) -> Path:
    """Write the annotated photo as PNG, atomically (a failed write leaves no half file); returns the file written.

    ``out`` is checked as :func:`check_annotation_target` does; a write that
    fails all the same (disk full) is an ``InputError`` too, naming the file.
    """
    target = check_annotation_target(out, photo)
    buffer = io.BytesIO()
    annotate(photo, found).save(buffer, format="PNG")
    try:
        write_file_atomically(target, buffer.getvalue())
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return target


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()
