"""Local features: RootSIFT keypoints, a pin outline and a colour thumbnail per reference image.

Pins are flat, so a photo of a pin is a homography of its catalogue image;
local features matched under one homography are strong proof of identity and
need no model weights at all. Each reference image keeps at most
``MAX_REFERENCE_FEATURES`` keypoints plus a small Lab thumbnail for the colour
check, together under 64 KB (750 x 72 B + 48 x 48 x 4 B = 63,216 B).

Reference features are taken from several simulated views of the product shot
(three scales, and four directions of a 48-degree tilt, as in ASIFT): phone
photos show pins small, blurred and at an angle, and a catalogue shot at one
scale shares few keypoints with them (scripts/probe_local_features.py: 5.4
geometrically correct matches per query at one scale, 13.8 with the views).
Half the views show the pin cut out onto a dark backdrop: a product shot is
light around the pin, photos are often dark, and the gradient across the
pin's rim, where many keypoints sit, then points the other way.

Descriptors are RootSIFT projected to ``DESCRIPTOR_DIMS`` dimensions by a
fixed PCA shipped with pinid (``rootsift_pca.npy``, fitted on generated pin
shots unrelated to any benchmark seed used for figures): 64 dimensions keep 97 %
of the variance and, on 60 benchmark photos, exactly as many correct matches
as 128, at half the bytes, so twice the keypoints fit in 64 KB.

Storage in ``INDEX_DIR/local/`` (NumPy ``.npy``, read with ``allow_pickle=False``)::

    descriptors.npy  (N, 64)  uint8    PCA-RootSIFT codes, all reference images concatenated
    keypoints.npy    (N, 4)   float16  x, y, size, angle in reference-image pixels
    images.npy       (M, 3)   int64    image_id, first row, end row
    geometry.npy     (M, 6)   float32  width, height, pin box x0, y0, x1, y1
    colour.npy       (M, T, T, 4) uint8  Lab thumbnail of the pin box (OpenCV 8-bit Lab) + pin mask
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


MAX_REFERENCE_FEATURES = 750
DESCRIPTOR_DIMS = 64
MAX_QUERY_FEATURES = 4000
MAX_BOARD_FEATURES = 5000
QUERY_SIDE = 1024
BOARD_SIDE = 1600
THUMBNAIL_SIDE = 48
CODE_SCALE = 200.0  # PCA coordinates of unit RootSIFT stay within +-0.6 (99.99 %: 0.55): x200 + 128 fits uint8
_DARK_BACKDROP = 60  # grey level of the cut-out views
_CONTRAST = 0.02  # OpenCV's default 0.04 finds too few points on flat enamel
_TILT = 1.5  # 1 / cos(48 degrees)
_FOREGROUND_DIFFERENCE = 40  # grey levels from the backdrop that count as pin


@dataclass(frozen=True)
class Features:
    """Keypoints (n, 4: x, y, size, angle) and uint8 PCA-RootSIFT codes (n, DESCRIPTOR_DIMS) of one image."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class ReferenceEntry:
    """What the index keeps of one reference image for verification."""

    features: Features
    pin_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in reference pixels
    colour: np.ndarray  # (T, T, 4) uint8: OpenCV Lab of the pin box, and 255 where the pin is

    @property
    def outline(self) -> np.ndarray:
        """Corners of the pin box, clockwise from top-left: what a photo's polygon is projected from."""
        x0, y0, x1, y1 = self.pin_box
        return np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square-root; then compare with L2."""
    values = descriptors.astype(np.float32)
    values /= np.maximum(values.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(values)


def _pca() -> tuple[np.ndarray, np.ndarray]:
    """(mean (128,), components (DESCRIPTOR_DIMS, 128)) of the shipped RootSIFT PCA."""
    from importlib import resources

    with resources.files("pinid.local").joinpath("rootsift_pca.npy").open("rb") as handle:
        table = np.load(handle, allow_pickle=False)
    return table[0], table[1:DESCRIPTOR_DIMS + 1]


def encode_descriptors(descriptors: np.ndarray) -> np.ndarray:
    """SIFT descriptors (n, 128) -> uint8 PCA-RootSIFT codes (n, DESCRIPTOR_DIMS); compare with L2."""
    if len(descriptors) == 0:
        return np.zeros((0, DESCRIPTOR_DIMS), np.uint8)
    mean, components = _pca()
    projected = (root_sift(descriptors) - mean) @ components.T
    return np.clip(np.rint(projected * CODE_SCALE) + 128, 0, 255).astype(np.uint8)




def _sift(grey: np.ndarray, limit: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints (n, 4), responses (n,) and raw SIFT descriptors of a grey image."""
    import cv2

    detector = cv2.SIFT_create(nfeatures=limit, contrastThreshold=_CONTRAST)
    keypoints, descriptors = detector.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 128), np.float32)
    points = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in keypoints], dtype=np.float32)
    responses = np.array([k.response for k in keypoints], dtype=np.float32)
    return points, responses, descriptors


def _grey_array(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("L")))


def query_features(image: Image.Image, *, board: bool = False) -> Features:
    """Features of a photo at a bounded size; coordinates are in the photo's own pixels."""
    import cv2

    side, limit = (BOARD_SIDE, MAX_BOARD_FEATURES) if board else (QUERY_SIDE, MAX_QUERY_FEATURES)
    grey = _grey_array(image)
    scale = min(1.0, side / max(grey.shape))
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    points, responses, descriptors = _sift(grey)
    keep = np.argsort(-responses, kind="stable")[:limit]
    points = points[keep]
    points[:, :3] /= scale
    return Features(points, encode_descriptors(descriptors[keep]), image.width, image.height)


def _views(width: int, height: int) -> list[tuple[np.ndarray, int]]:
    """(affine map reference -> view, long side of the view) for each simulated view."""
    import cv2

    views = [(np.eye(3), side) for side in (512, 256, 128)]
    for angle in (0, 45, 90, 135):
        rotate = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0), [0, 0, 1]])
        affine = np.linalg.inv(rotate) @ np.diag([1.0, 1.0 / _TILT, 1.0]) @ rotate
        views += [(affine, 384), (affine, 192)]
    return views


def _on_dark_backdrop(image: Image.Image) -> Image.Image:
    """The pin cut out (by its mask, edges softened) and laid on a dark grey backdrop."""
    import cv2

    mask = cv2.erode(pin_mask(image), np.ones((3, 3), np.uint8))
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)[..., None]
    pixels = np.asarray(image.convert("RGB")).astype(np.float32)
    return Image.fromarray((pixels * soft + _DARK_BACKDROP * (1 - soft)).clip(0, 255).astype(np.uint8))


def reference_features(image: Image.Image, max_features: int | None = None) -> Features:
    """Features of a product shot from all simulated views, mapped back to its own pixels.

    Each view, on the shot's own backdrop and on a dark one, gets an equal
    share of ``max_features`` (its strongest keypoints); points found in a
    tilted view keep that view's descriptor, which is the one a tilted photo
    will show.
    """
    max_features = MAX_REFERENCE_FEATURES if max_features is None else max_features
    light = _view_features(image, max(1, max_features // 2))
    dark = _view_features(_on_dark_backdrop(image), max(1, max_features - max_features // 2))
    return Features(np.concatenate([light.keypoints, dark.keypoints]),
                    np.concatenate([light.descriptors, dark.descriptors]), image.width, image.height)


def _view_features(image: Image.Image, max_features: int) -> Features:
    import cv2

    grey = _grey_array(image)
    height, width = grey.shape
    views = _views(width, height)
    share = max(1, max_features // len(views))
    all_points, all_descriptors = [], []
    for affine, side in views:
        warped = grey if np.allclose(affine, np.eye(3)) else cv2.warpAffine(
            grey, affine[:2], (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        scale = min(1.0, side / max(width, height))
        view = cv2.resize(warped, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else warped
        points, responses, descriptors = _sift(view)
        if not len(points):
            continue
        keep = np.argsort(-responses, kind="stable")[:share]
        points, descriptors = points[keep], descriptors[keep]
        back = np.linalg.inv(affine)
        xy = np.hstack([points[:, :2] / scale, np.ones((len(points), 1), np.float32)]) @ back.T
        theta = np.deg2rad(points[:, 3])
        direction = np.stack([np.cos(theta), np.sin(theta)], axis=1) @ back[:2, :2].T
        angle = np.rad2deg(np.arctan2(direction[:, 1], direction[:, 0])) % 360.0
        size = points[:, 2] / scale * np.sqrt(abs(np.linalg.det(back[:2, :2])))
        all_points.append(np.stack([xy[:, 0], xy[:, 1], size, angle], axis=1).astype(np.float32))
        all_descriptors.append(descriptors)
    if not all_points:
        return Features(np.zeros((0, 4), np.float32), np.zeros((0, DESCRIPTOR_DIMS), np.uint8), width, height)
    return Features(np.concatenate(all_points)[:max_features],
                    encode_descriptors(np.concatenate(all_descriptors))[:max_features], width, height)


def pin_mask(image: Image.Image) -> np.ndarray:
    """Where the pin is in a product shot: pixels that differ from the backdrop (the border's median)."""
    import cv2

    pixels = np.asarray(image.convert("RGB")).astype(np.int16)
    ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    backdrop = np.median(ring, axis=0)
    mask = (np.abs(pixels - backdrop).max(axis=2) > _FOREGROUND_DIFFERENCE).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def reference_entry(image: Image.Image) -> ReferenceEntry:
    """Everything verification needs from one reference image."""
    import cv2

    rgb = np.asarray(image.convert("RGB"))
    mask = pin_mask(image)
    ys, xs = np.nonzero(mask)
    if len(xs) < 16:  # no visible pin: the whole image is the pin
        box = (0.0, 0.0, float(image.width), float(image.height))
        mask = np.ones_like(mask)
    else:
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    lab = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2LAB)
    size = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    thumbnail = cv2.resize(lab, size, interpolation=cv2.INTER_AREA)
    # a thumbnail pixel counts as pin only if it is wholly pin: edges mix in the backdrop
    inside = cv2.resize(mask[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99
    colour = np.dstack([thumbnail, inside.astype(np.uint8) * 255])
    return ReferenceEntry(reference_features(image), box, colour)
