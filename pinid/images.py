"""Opening any image a user may hand us, safely and the same way every time.

Phone photos carry EXIF rotation, catalogue scans come as CMYK or 16-bit
TIFF, web images as palettes with transparency or animations. All of them
become one upright 8-bit RGB picture here, or a one-line ``ImageError``.
Pillow's decompression-bomb guard stays on.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

#: Background that transparent areas are composited onto. Catalogue product
#: shots are usually cut out onto white, so white keeps them looking the same.
ALPHA_BACKGROUND = (255, 255, 255)


def load_image(source: ImageSource, *, min_side: int | None = None) -> Image.Image:
    """Open ``source`` as an upright RGB image, or raise ``ImageError``.

    ``min_side`` lets JPEG decoding use DCT scaling (Pillow's ``draft``): a
    12-megapixel phone photo decodes several times faster at the size the
    encoder needs, while the result still has at least ``min_side`` pixels
    on its shorter side.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        return _normalise(source, name)
    try:
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise ImageError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, not an image") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not an image or an unsupported format") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"refused, too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(name, f"cannot be read ({exc})") from None
    with opened as image:
        if min_side and image.format == "JPEG":
            _draft(image, min_side)
        return _normalise(image, name)


def _draft(image: Image.Image, min_side: int) -> None:
    width, height = image.size
    scale = min_side / max(1, min(width, height))
    if scale < 1:
        image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))


def _normalise(image: Image.Image, name: str) -> Image.Image:
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
        return _to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"refused, too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(name, f"corrupt or truncated image ({exc})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy() if image.readonly else image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _high_bit_depth_to_rgb(image)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0  # 0..1 floats or 0..255
        return _grey_array_to_rgb(np.clip(values * scale, 0, 255))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, ALPHA_BACKGROUND)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_bit_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    # 16-bit data arrives as I;16 or, from PNG, as 32-bit "I" holding 0..65535.
    peak = 65535.0 if values.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
    return _grey_array_to_rgb(np.clip(values, 0, peak) * (255.0 / peak))


def _grey_array_to_rgb(values: np.ndarray) -> Image.Image:
    grey = Image.fromarray(np.round(values).astype(np.uint8), mode="L")
    return grey.convert("RGB")


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source))
    if isinstance(source, bytes):
        return "<image bytes>"
    return "<image>"


def working_copy(image: Image.Image, side: int) -> tuple[Image.Image, float]:
    """The image at a bounded long side, and the factor from its pixels back to the original's.

    The one long-side reduction pinid uses: photos for local features,
    reference images before feature extraction, thumbnails.
    """
    scale = min(1.0, side / max(image.size))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=2.0), image.width / size[0]
