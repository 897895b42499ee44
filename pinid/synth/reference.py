"""A pin material made from a finished image (a catalogue's own product shot, or any artwork).

The benchmark builds its pins from layered OpenMoji artwork. To simulate phone
photos of pins that only exist as pictures (a user's catalogue, for
self-calibration; other artwork, for training a stand-in model), the picture
itself becomes the albedo of a flat enamel pin with a bevelled rim: the photo
simulator then tilts, lights, blurs and compresses it like any other pin.
"""

from __future__ import annotations

import cv2
import numpy as np

from .enamel import Material

_TINT = np.array([0.85, 0.84, 0.80], np.float32)  # the rim's metal: neutral, slightly warm


def material_from_image(rgb: np.ndarray, mask: np.ndarray | None = None, size: int = 512) -> Material:
    """The pin shown in ``rgb`` (H x W x 3, uint8) as a square ``size`` material.

    ``mask`` (H x W, non-zero on the pin) cuts the pin out of its backdrop; without
    one the whole image is the pin. The pin is centred with a small margin so
    the rim and its shadow fit; colours are kept as the image shows them.
    """
    image = np.asarray(rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"expected an H x W x 3 image, got shape {image.shape}")
    if mask is not None and np.shape(mask) != image.shape[:2]:
        raise ValueError(f"the mask's shape {np.shape(mask)} is not the image's {image.shape[:2]}")
    pin = np.ones(image.shape[:2], bool) if mask is None else np.asarray(mask) > 0
    ys, xs = np.nonzero(pin)
    if len(xs) < 4:
        pin = np.ones(image.shape[:2], bool)
        ys, xs = np.nonzero(pin)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y0:y1, x0:x1].astype(np.float32) / 255.0
    cut = pin[y0:y1, x0:x1].astype(np.float32)
    side = int(round(max(crop.shape[:2]) / 0.92))
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    albedo = np.zeros((side, side, 3), np.float32)
    alpha = np.zeros((side, side), np.float32)
    albedo[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    alpha[top:top + crop.shape[0], left:left + crop.shape[1]] = cut
    albedo = cv2.resize(albedo, (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6 * size / 512)
    shape = (alpha > 0.5).astype(np.uint8)
    return Material(np.clip(albedo, 0.02, 0.98), alpha, np.zeros_like(alpha), _bevel(shape, size), _TINT.copy())


def _bevel(shape: np.ndarray, size: int) -> np.ndarray:
    """Normals of a flat face whose edge rounds off over a few pixels (it catches the light)."""
    u = size / 512.0
    height = np.sqrt(np.clip(cv2.distanceTransform(shape, cv2.DIST_L2, 5) / (6 * u), 0, 1)) * 3.0
    height = cv2.GaussianBlur(height.astype(np.float32), (0, 0), 1.1 * u)
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    normal = np.dstack([-gx * 1.6 / u, -gy * 1.6 / u, np.ones_like(gx)])
    return (normal / np.linalg.norm(normal, axis=2, keepdims=True)).astype(np.float32)
