"""A 64-bit DCT perceptual hash, so re-uploads of one photo are found without a model.

A re-upload is the same picture resized, re-compressed, filtered or lightly
cropped; its low-frequency structure barely moves, so the signs of the lowest
8x8 DCT coefficients (against their median) barely move either. The hash
does not depend on the encoder, which keeps ``photo`` mode meaningful with any
weights. Implemented with numpy and Pillow only (no extra dependency).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

#: Bumped whenever the hash changes, so cached hashes are never compared with new ones.
PHASH_VERSION = 1
_SIDE = 32  # the image is reduced to 32x32 grey before the DCT
_KEEP = 8  # the top-left 8x8 coefficients make the 64 bits
#: Windows hashed per image: the whole image, then crops at a few scales on a 3x3
#: grid. A re-upload cropped by up to ~25% lines up with one of them well enough
#: that its whole-image hash lands within a few bits of that window's hash.
WINDOW_SCALES = (0.92, 0.84, 0.76)
WINDOWS = 1 + 9 * len(WINDOW_SCALES)


@lru_cache(maxsize=1)
def _dct_matrix(n: int = _SIDE) -> np.ndarray:
    """Orthonormal DCT-II basis; ``M @ x @ M.T`` is the 2-D DCT of ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def phash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of an RGB image, as an unsigned integer."""
    grey = image.convert("L")
    grey.draft("L", (_SIDE * 4, _SIDE * 4))  # no-op unless a JPEG still undecoded
    small = np.asarray(grey.resize((_SIDE, _SIDE), Image.Resampling.BOX), dtype=np.float64)
    matrix = _dct_matrix()
    low = (matrix @ small @ matrix.T)[:_KEEP, :_KEEP].reshape(-1)
    # The DC term only measures brightness; a filter changes it without changing the photo.
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def window_hashes(image: Image.Image) -> np.ndarray:
    """Hashes of the whole image and of its crop windows, as ``(WINDOWS,)`` uint64; entry 0 is the whole."""
    width, height = image.size
    hashes = [phash(image)]
    for scale in WINDOW_SCALES:
        crop_w, crop_h = width * scale, height * scale
        for fy in (0.0, 0.5, 1.0):
            for fx in (0.0, 0.5, 1.0):
                x0, y0 = round((width - crop_w) * fx), round((height - crop_h) * fy)
                box = (x0, y0, max(x0 + 1, round(x0 + crop_w)), max(y0 + 1, round(y0 + crop_h)))
                hashes.append(phash(image.crop(box)))
    return np.array(hashes, dtype=np.uint64)


def photo_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Crop-tolerant distance between rows of window hashes ``(n, WINDOWS)``: the
    smallest distance from either whole-image hash to any window of the other."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    one_way = hamming(a[:, :1], b).min(axis=1)
    other_way = hamming(b[:, :1], a).min(axis=1)
    return np.minimum(one_way, other_way)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    xor = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: a hardware popcount
        return np.bitwise_count(xor).astype(np.int64)
    as_bytes = np.ascontiguousarray(xor).view(np.uint8).reshape(*np.shape(xor), 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.int64)

