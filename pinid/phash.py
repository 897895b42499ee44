"""Photo hashes, so re-uploads of one photo are found without a model.

A re-upload is the same picture resized, re-compressed, filtered or lightly
cropped; its low-frequency structure barely moves, so the signs of the lowest
8x8 DCT coefficients (against their median) barely move either. Sellers who
want to slip a copied photo past a duplicate check also mirror it or turn it
by any angle (leaving black corners, or cropping back to the largest upright
rectangle inside). So each image gets one row of 64-bit words (``WINDOWS`` of
them):

* ``CROP``: the DCT hash of the whole image, then of crop windows;
* ``RINGS``: a ring hash of central discs at ``RING_SCALES`` of the largest
  one. Sampled in polar coordinates about the image centre, a turn by any
  angle only shifts the angle axis and a mirror reverses it; the magnitudes of
  the Fourier transform along it change under neither. The discs shrink in
  steps of 5%, so a copy whose canvas grew (black corners) or shrank (cropped
  back to a rectangle) has its own whole disc close to one of them.

DCT hashes of the whole image mirrored and turned by quarter turns were tried
as well and dropped: on 603 generated listing photos they sent nine times as
many pairs of different photos (plain, centred desk shots) to the geometric
check, for a few more mirrored copies that were also cropped off-centre.

The hashes do not depend on the encoder, which keeps ``photo`` mode meaningful
with any weights.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

#: Bumped whenever the hashes change, so cached hashes are never compared with new ones.
PHASH_VERSION = 2
_SIDE = 32  # the image is reduced to 32x32 grey before the DCT
_KEEP = 8  # the top-left 8x8 coefficients make the 64 bits
#: Crop windows: the whole image, then crops at a few scales on a 3x3 grid. A
#: re-upload cropped by up to ~25% lines up with one of them well enough that
#: its whole-image hash lands within a few bits of that window's hash.
WINDOW_SCALES = (0.92, 0.84, 0.76)
_CROPS = 1 + 9 * len(WINDOW_SCALES)
#: Disc radii of the ring hashes, as fractions of the largest disc inside the image
#: (1 down to 0.46: black corners of a 45-degree turn of a 16:9 photo need about 0.5).
RING_SCALES = tuple(0.95 ** i for i in range(16))
#: Ring hashes that query the others' (the two largest discs: a copy whose scale
#: falls between two steps still meets one of them within a few bits).
RING_QUERIES = 2
CROP = slice(0, _CROPS)
RINGS = slice(_CROPS, _CROPS + len(RING_SCALES))
WINDOWS = RINGS.stop  # 64-bit words per image
#: Ring-hash bits (of 64) within which two images are "same photo, turned" candidates. On 60
#: generated listing photos turned by 7-180 degrees (black corners or cropped back), mirrored,
#: shrunk and re-compressed, 8 bits kept 97-100% of the copies of each kind (90% turned by 137
#: degrees and cropped back); 4 of 181,096 pairs of different photos came as close (26 within 10
#: bits). Hashes that share a 16-bit band by chance are 25 times rarer within 8 bits than within
#: 10, which keeps scripts/bench_dedup.py (random hashes, no geometric check) at today's precision.
MAX_RING_DISTANCE = 8

_ANGLES, _RINGS, _DISC = 64, 16, 32  # polar samples; each disc is blurred to about a 32-pixel radius
#: Ring hashes want photos decoded with at least this many pixels on the shorter side: the
#: largest disc is sampled at a 64-pixel radius. Decoded at 64 pixels (a tiny model's input),
#: 14% of the turned and mirrored copies above were missed; at 160, 2%.
HASH_MIN_SIDE = 160
_INNER = 0.12  # the innermost rings are too few pixels to say anything; start at 12% of the radius
_HARMONICS = 8  # Fourier harmonics 1..8 along the angle axis


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


def _ring_hash(polar: np.ndarray) -> int:
    """64 bits from a polar sample ``(angles, rings)`` that neither a turn nor a mirror changes.

    Per ring, the magnitudes of the Fourier transform along the angle axis.
    8 bits: does the ring mean grow outwards (9 bands across the rings)? 56
    bits: in each of 8 bands of rings, is harmonic m+1 stronger than harmonic
    m (m = 1..7)? Comparisons of neighbours, not thresholds, keep the bits
    steady under resampling and JPEG.
    """
    spectrum = np.abs(np.fft.rfft(polar, axis=0))[:_HARMONICS + 1]  # (harmonic, ring)
    bands = np.linspace(0, _RINGS - 1, 9)
    mean = np.interp(bands, np.arange(_RINGS), np.log1p(spectrum[0]))
    harmonics = spectrum[1:].reshape(_HARMONICS, _RINGS // 2, 2).mean(axis=2)  # (harmonic, ring band)
    bits = np.concatenate([np.diff(mean) > 0, (np.diff(harmonics, axis=0) > 0).reshape(-1)])
    return int(np.packbits(bits).view(">u8")[0])


def ring_hashes(image: Image.Image) -> list[int]:
    """Ring hashes of the central discs at ``RING_SCALES`` (see the module docstring)."""
    import cv2

    grey = np.asarray(image.convert("L"), dtype=np.float32)
    height, width = grey.shape
    side = min(width, height)  # the discs lie in the central square
    left, top = (width - side) // 2, (height - side) // 2
    # Reduce once (area averaging) so the largest disc has a radius of 2 * _DISC pixels;
    # then each disc needs at most a light blur before sampling.
    reduced = max(1, round(2 * _DISC / 0.49))
    zoom = reduced / side
    square = cv2.resize(np.ascontiguousarray(grey[top:top + side, left:left + side]), (reduced, reduced),
                        interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    # the picture's centre, in pixel centres of the reduced square (exact when the crop is off by half a pixel)
    centre_x = ((width - 1) / 2 - left + 0.5) * zoom - 0.5
    centre_y = ((height - 1) / 2 - top + 0.5) * zoom - 0.5
    angles = 2 * np.pi * np.arange(_ANGLES) / _ANGLES
    rings = _INNER + (1 - _INNER) * (np.arange(_RINGS) + 0.5) / _RINGS
    hashes = []
    for scale in RING_SCALES:
        radius = 0.49 * reduced * scale
        reduction = radius / _DISC
        source = cv2.GaussianBlur(square, (0, 0), 0.5 * reduction) if reduction > 1 else square
        xs = (centre_x + radius * rings[None, :] * np.cos(angles)[:, None]).astype(np.float32)
        ys = (centre_y + radius * rings[None, :] * np.sin(angles)[:, None]).astype(np.float32)
        polar = cv2.remap(source, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        hashes.append(_ring_hash(polar.astype(np.float64)))
    return hashes


def window_hashes(image: Image.Image, ring_image: Image.Image | None = None) -> np.ndarray:
    """The image's row of hashes, ``(WINDOWS,)`` uint64: ``CROP`` (entry 0 is the whole
    image), then ``RINGS`` (see the module docstring).

    ``ring_image``: the same photo decoded larger, for the ring hashes, when
    ``image`` has fewer than ``HASH_MIN_SIDE`` pixels on its shorter side.
    """
    width, height = image.size
    hashes = [phash(image)]
    for scale in WINDOW_SCALES:
        crop_w, crop_h = width * scale, height * scale
        for fy in (0.0, 0.5, 1.0):
            for fx in (0.0, 0.5, 1.0):
                x0, y0 = round((width - crop_w) * fx), round((height - crop_h) * fy)
                box = (x0, y0, max(x0 + 1, round(x0 + crop_w)), max(y0 + 1, round(y0 + crop_h)))
                hashes.append(phash(image.crop(box)))
    hashes += ring_hashes(image if ring_image is None else ring_image)
    return np.array(hashes, dtype=np.uint64)


def photo_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Crop-tolerant distance between rows of hashes ``(n, WINDOWS)``: the smallest
    distance from either whole-image DCT hash to any crop window of the other."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    one_way = hamming(a[:, :1], b[:, CROP]).min(axis=1)
    other_way = hamming(b[:, :1], a[:, CROP]).min(axis=1)
    return np.minimum(one_way, other_way)


def ring_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Turn- and mirror-invariant distance between rows of hashes ``(n, WINDOWS)``: the
    smallest distance from either image's largest-disc ring hash to a ring hash of the other."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    first = RINGS.start
    return np.minimum(hamming(a[:, first:first + 1], b[:, RINGS]).min(axis=1),
                      hamming(b[:, first:first + 1], a[:, RINGS]).min(axis=1))


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    xor = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: a hardware popcount
        return np.bitwise_count(xor).astype(np.int64)
    as_bytes = np.ascontiguousarray(xor).view(np.uint8).reshape(*np.shape(xor), 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.int64)
