"""Local features: RootSIFT keypoints, a pin outline and a colour thumbnail per reference image.

Pins are flat, so a photo of a pin is a homography of its catalogue image;
local features matched under one homography are strong proof of identity and
need no model weights at all. Each reference image keeps at most
``FeatureConfig.max_reference_features`` keypoints plus a small Lab thumbnail
for the colour check, together under 64 KB (750 x 72 B + 48 x 48 x 4 B = 63,216 B).

Reference features are taken from several simulated views of the product shot
(three scales, and four directions of a 48-degree tilt, as in ASIFT): phone
photos show pins small, blurred and at an angle, and a catalogue shot at one
scale shares few keypoints with them (scripts/probe_local_features.py: 5.4
geometrically correct matches per query at one scale, 13.8 with the views).
Half the views show the pin cut out onto a dark backdrop: a product shot is
light around the pin, photos are often dark, and the gradient across the
pin's rim, where many keypoints sit, then points the other way.

The tunables (how many keypoints, at what image size, which views) are one
frozen ``FeatureConfig``, written whole into each index's manifest.
``DESCRIPTOR_DIMS``, ``CODE_SCALE`` and ``THUMBNAIL_SIDE`` are not tunables:
they are facts of the shipped PCA table and of the stored arrays.

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
                                         (255: wholly pin, 128: within its filled silhouette only)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from .config import Config, check
from .glance import filled

# Fixed facts, not tunables: the shipped PCA table's width, its uint8 coding, the stored thumbnail's side.
DESCRIPTOR_DIMS = 64
CODE_SCALE = 200.0  # PCA coordinates of unit RootSIFT stay within +-0.6 (99.99 %: 0.55): x200 + 128 fits uint8
THUMBNAIL_SIDE = 48
# Bump when reference_entry's output changes for the same FeatureConfig and PCA table: the local-feature
# cache (pinid.local.cache) keys entries on it, so older entries then stop being returned.
EXTRACTION_VERSION = 2
#: Alpha of a colour thumbnail: wholly pin (what the colour check compares), or only within the pin's filled
#: silhouette (what the whole-pin glance reads; indexes made before it have no such pixels).
INSIDE_ALPHA, SILHOUETTE_ALPHA = 255, 128


@dataclass(frozen=True)
class FeatureConfig(Config):
    """How keypoints are found and how many are kept, for reference shots and for photos."""

    max_reference_features: int = 750  # per reference image, all views together (the 64 KB budget)
    reference_long_side_px: int = 2048  # larger reference images are reduced first (bounds memory: ~250 MB)
    # keypoints kept of a single-pin photo (strongest first, spread over query_feature_grid): 1,000 answered as
    # well as 4,000 on the full benchmark (1,000 photos: recall@1 0.446 vs 0.430) and bound the time of busy
    # photos (150 photos: p90 1.9 -> 0.9 s); spread over the photo, 1,000 keep a pin on a busy backdrop
    # (tests/local/test_verify.py). 1,500 answered as 1,000 did (300 photos, seed 7: it won 4 photos, lost 3) at
    # p90 749 against 657 ms: the photos with most keypoints are the slowest (README, "Faster answers")
    max_query_features: int = 1000
    max_board_features: int = 5000  # ... of a board photo
    query_feature_grid: int = 4  # cells a side over which a single-pin photo's kept keypoints are spread (1: none)
    query_long_side_px: int = 1024  # a photo is reduced to this long side before extraction
    board_long_side_px: int = 1600
    # 1: a photo's mirror-image features get SIFT's own descriptors of the mirrored photo (_mirror_descriptors);
    # 0: the descriptors' bins permuted (MIRROR_BINS), which is free but only close
    computed_mirror_descriptors: int = 0
    sift_contrast_threshold: float = 0.02  # OpenCV's default 0.04 finds too few points on flat enamel
    reference_view_long_sides_px: tuple[int, ...] = (512, 256, 128)  # untilted views of a product shot
    tilt_factor: float = 1.5  # 1 / cos(48 degrees): how much the tilted views foreshorten
    tilt_directions_deg: tuple[int, ...] = (0, 45, 90, 135)
    tilted_view_long_sides_px: tuple[int, ...] = (384, 192)
    dark_backdrop_grey: int = 60  # grey level of the cut-out views
    foreground_difference_above: int = 40  # grey levels from the backdrop above which a pixel is pin

    def __post_init__(self) -> None:
        for name in ("max_reference_features", "reference_long_side_px", "max_query_features", "query_feature_grid",
                     "max_board_features", "query_long_side_px", "board_long_side_px"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1")
        check(self.sift_contrast_threshold > 0, "sift_contrast_threshold must be above 0")
        check(self.computed_mirror_descriptors in (0, 1), "computed_mirror_descriptors must be 0 or 1")
        check(self.tilt_factor >= 1, "tilt_factor must be at least 1")
        check(all(side >= 1 for side in self.reference_view_long_sides_px + self.tilted_view_long_sides_px),
              "view sides must be at least 1 px")
        check(0 <= self.dark_backdrop_grey <= 255, "dark_backdrop_grey must be 0..255")
        check(0 <= self.foreground_difference_above <= 255, "foreground_difference_above must be 0..255")

    @classmethod
    def fast(cls) -> "FeatureConfig":
        """Fewer, smaller simulated views (two tilt directions, tilted views at 288 and 144 px): reference
        extraction takes about half the CPU time of the default views (scripts/bench_local_features.py
        --fast). Not the default: on one 270-photo sample its recall@1 was within noise of the default's,
        and a larger sample has not been scored yet."""
        return cls(tilt_directions_deg=(0, 90), tilted_view_long_sides_px=(288, 144))


@dataclass(frozen=True)
class Features:
    """Keypoints (n, 4: x, y, size, angle) and uint8 PCA-RootSIFT codes (n, DESCRIPTOR_DIMS) of one image.

    ``inverted``, where asked for (a photo's, ``query_feature_pair``), holds each keypoint's codes as they
    would be were the image's light and dark swapped (``INVERTED_BINS``): what a raised metal line that turned
    from dark to light looks like to SIFT.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int
    inverted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class ReferenceEntry:
    """What the index keeps of one reference image for verification."""

    features: Features
    pin_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in reference pixels
    colour: np.ndarray  # (T, T, 4) uint8: OpenCV Lab of the pin box; INSIDE_ALPHA where wholly pin,
    #                     SILHOUETTE_ALPHA elsewhere within its filled outline

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




def _sift(grey: np.ndarray, contrast: float = FeatureConfig.sift_contrast_threshold
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints (n, 4), responses (n,), raw SIFT descriptors and OpenCV's packed octaves of a grey image."""
    import cv2

    detector = cv2.SIFT_create(nfeatures=0, contrastThreshold=contrast)
    keypoints, descriptors = detector.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 128), np.float32),
                np.zeros(0, np.int64))
    points = np.array([(k.pt[0], k.pt[1], k.size, k.angle) for k in keypoints], dtype=np.float32)
    responses = np.array([k.response for k in keypoints], dtype=np.float32)
    return points, responses, descriptors, np.array([k.octave for k in keypoints], np.int64)


def _mirror_descriptors(grey: np.ndarray, points: np.ndarray, octaves: np.ndarray, descriptors: np.ndarray,
                        contrast: float) -> np.ndarray:
    """SIFT's own descriptors of the mirrored image at the mirrored keypoints (``points``: already mirrored).

    Permuting the bins (``MIRROR_BINS``) is free but only close: OpenCV
    samples and bins a mirrored patch slightly differently (about 5 % of a
    descriptor's mass at the median, 10 % at p90), and the ratio test is
    sensitive to that; a mirrored photo's true pin then lost to chance
    alignments more often than the same photo as taken did. Computing them
    costs a third of the extraction. Falls back to the permutation should
    OpenCV drop or reorder keypoints.
    """
    import cv2

    if not len(points):
        return descriptors[:, MIRROR_BINS]
    keypoints = [cv2.KeyPoint(float(x), float(y), float(size), float(angle), 0.0, int(octave))
                 for (x, y, size, angle), octave in zip(points.tolist(), octaves.tolist())]
    detector = cv2.SIFT_create(nfeatures=0, contrastThreshold=contrast)
    kept, computed = detector.compute(np.ascontiguousarray(grey[:, ::-1]), keypoints)
    if computed is None or len(kept) != len(keypoints):
        return descriptors[:, MIRROR_BINS]
    return computed


def _grey_array(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("L")))


def query_features(image: Image.Image, *, board: bool = False, config: FeatureConfig = FeatureConfig()
                   ) -> Features:
    """Features of a photo at a bounded size; coordinates are in the photo's own pixels."""
    return query_feature_pair(image, board=board, config=config, mirrored=False)[0]


def query_feature_pair(image: Image.Image, *, board: bool = False, config: FeatureConfig = FeatureConfig(),
                       mirrored: bool = True, inverted: bool = False) -> tuple[Features, Features | None]:
    """Features of a photo, and (``mirrored``) those of its left-right mirror image, from one SIFT run.

    Front cameras and some listing sites mirror photos. SIFT is mirror-
    covariant: a mirrored image has the same keypoints (x -> width - 1 - x,
    angle -> 180 - angle) and descriptors whose bins are permuted (rows of the
    4 x 4 grid reversed, orientation bins negated; ``MIRROR_BINS``), so the
    mirror's features cost a permutation, not a second extraction. Rows of
    both sets correspond one to one; the mirror's coordinates are in the
    mirrored photo's pixels.
    """
    import cv2

    side, limit = ((config.board_long_side_px, config.max_board_features) if board
                   else (config.query_long_side_px, config.max_query_features))
    grey = _grey_array(image)
    scale = min(1.0, side / max(grey.shape))
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    points, responses, descriptors, octaves = _sift(grey, config.sift_contrast_threshold)
    keep = spread_strongest(points, responses, limit, grey.shape, 1 if board else config.query_feature_grid)
    points, descriptors, octaves = points[keep], descriptors[keep], octaves[keep]
    seen = points.copy()
    seen[:, :3] /= scale
    upright = Features(seen, encode_descriptors(descriptors), image.width, image.height,
                       encode_descriptors(descriptors[:, INVERTED_BINS]) if inverted else None)
    if not mirrored:
        return upright, None
    flipped = points.copy()
    # OpenCV's keypoints lie a quarter pixel right of and below the pixel grid's (SIFT works on the photo
    # doubled in size), so x mirrors to width - 0.5 - x (what SIFT finds in the mirrored photo), not width - 1 - x
    flipped[:, 0] = grey.shape[1] - 0.5 - flipped[:, 0]
    flipped[:, 3] = (180.0 - flipped[:, 3]) % 360.0
    mirrored_descriptors = (_mirror_descriptors(grey, flipped, octaves, descriptors, config.sift_contrast_threshold)
                            if config.computed_mirror_descriptors else descriptors[:, MIRROR_BINS])
    flipped[:, :3] /= scale
    return upright, Features(flipped, encode_descriptors(mirrored_descriptors), image.width, image.height,
                             encode_descriptors(mirrored_descriptors[:, INVERTED_BINS]) if inverted else None)


def spread_strongest(points: np.ndarray, responses: np.ndarray, limit: int, shape: tuple[int, ...],
                     grid: int) -> np.ndarray:
    """Rows of the ``limit`` keypoints to keep, spread over a ``grid`` x ``grid`` of cells of the image.

    Each cell's strongest keypoint comes first, then each cell's second, and
    so on (strongest first within a round): a pin on a busy backdrop (fabric,
    wood grain) keeps its own keypoints, which the backdrop's stronger ones
    would otherwise crowd out of a plain strongest-first cut. ``grid`` 1 is
    the plain cut.
    """
    if grid <= 1 or len(points) <= limit:
        return np.argsort(-responses, kind="stable")[:limit]
    height, width = shape[:2]
    cells = (np.minimum(points[:, 1] * grid // height, grid - 1) * grid
             + np.minimum(points[:, 0] * grid // width, grid - 1)).astype(np.int64)
    by_cell = np.lexsort((-responses, cells))  # cell by cell, strongest first within each
    starts = np.r_[0, np.flatnonzero(np.diff(cells[by_cell])) + 1]
    place_in_cell = np.empty(len(points), np.int64)
    place_in_cell[by_cell] = np.arange(len(points)) - np.repeat(starts, np.diff(np.r_[starts, len(points)]))
    return np.lexsort((-responses, place_in_cell))[:limit]


def _mirror_bins() -> np.ndarray:
    """Where each of SIFT's 128 bins (4 x 4 grid rows, columns, 8 orientations) moves when the image is
    mirrored left-right about the keypoint's direction: grid rows reverse, orientations negate (checked
    against OpenCV's descriptors of mirrored images in tests/local/test_features.py)."""
    grid = np.arange(128).reshape(4, 4, 8)
    return np.ascontiguousarray(grid[::-1][:, :, (-np.arange(8)) % 8].reshape(-1))


MIRROR_BINS = _mirror_bins()


def _inverted_bins() -> np.ndarray:
    """Where each of SIFT's 128 bins moves when the image's light and dark are swapped: every gradient turns
    round, and so does the keypoint's direction (its angle + 180 degrees), so orientations keep their bins
    relative to it while the 4 x 4 grid turns half round (checked against OpenCV's descriptors of inverted
    images in tests/local/test_features.py)."""
    return np.ascontiguousarray(np.arange(128).reshape(4, 4, 8)[::-1, ::-1].reshape(-1))


INVERTED_BINS = _inverted_bins()


def _views(width: int, height: int, config: FeatureConfig) -> list[tuple[np.ndarray, int]]:
    """(affine map reference -> view, long side of the view) for each simulated view."""
    import cv2

    views = [(np.eye(3), side) for side in config.reference_view_long_sides_px]
    for angle in config.tilt_directions_deg:
        rotate = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0), [0, 0, 1]])
        affine = np.linalg.inv(rotate) @ np.diag([1.0, 1.0 / config.tilt_factor, 1.0]) @ rotate
        views += [(affine, side) for side in config.tilted_view_long_sides_px]
    return views


def _on_dark_backdrop(image: Image.Image, config: FeatureConfig, rgb: np.ndarray | None = None,
                      mask: np.ndarray | None = None) -> Image.Image:
    """The pin cut out (by its mask, edges softened) and laid on a dark grey backdrop.

    ``rgb`` and ``mask`` (the image's RGB pixels and ``pin_mask``) may be
    passed when the caller has them already: the same values, computed once.
    """
    import cv2

    rgb = np.asarray(image.convert("RGB")) if rgb is None else rgb
    mask = pin_mask(image, config=config, rgb=rgb) if mask is None else mask
    soft = cv2.GaussianBlur(cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(np.float32), (0, 0), 0.8)[..., None]
    pixels = rgb.astype(np.float32)  # pixels * soft + grey * (1 - soft), in place: the same float32 steps
    pixels *= soft
    pixels += config.dark_backdrop_grey * (1 - soft)
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))


def reference_features(image: Image.Image, max_features: int | None = None, *,
                       config: FeatureConfig = FeatureConfig()) -> Features:
    """Features of a product shot from all simulated views, mapped back to its own pixels.

    Each view, on the shot's own backdrop and on a dark one, gets an equal
    share of ``max_features`` (default ``config.max_reference_features``, its
    strongest keypoints); points found in a tilted view keep that view's
    descriptor, which is the one a tilted photo will show.
    """
    return _reference_features(image, max_features, config, np.asarray(image.convert("RGB")), None)


def _reference_features(image: Image.Image, max_features: int | None, config: FeatureConfig, rgb: np.ndarray,
                        mask: np.ndarray | None) -> Features:
    max_features = config.max_reference_features if max_features is None else max_features
    light = _view_features(image, max(1, max_features // 2), config)
    dark = _view_features(_on_dark_backdrop(image, config, rgb, mask), max(1, max_features - max_features // 2),
                          config)
    return Features(np.concatenate([light.keypoints, dark.keypoints]),
                    np.concatenate([light.descriptors, dark.descriptors]), image.width, image.height)


def _view_images(grey: np.ndarray, config: FeatureConfig) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """(affine map reference -> view, scale of the view, the view's grey pixels) for each simulated view."""
    import cv2

    height, width = grey.shape
    last: tuple[np.ndarray, np.ndarray] | None = None  # views of one tilt differ only in size: warp once
    for affine, side in _views(width, height, config):
        if np.allclose(affine, np.eye(3)):
            warped = grey
        elif last is not None and np.array_equal(last[0], affine):
            warped = last[1]
        else:
            warped = cv2.warpAffine(grey, affine[:2], (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            last = (affine, warped)
        scale = min(1.0, side / max(width, height))
        view = cv2.resize(warped, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else warped
        yield affine, scale, view


def reference_sift_descriptors(image: Image.Image, *, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Raw SIFT descriptors (n, 128) of every simulated view of a product shot, on its own backdrop and on a
    dark one: what the shipped RootSIFT PCA is fitted on (``scripts/fit_descriptor_pca.py``)."""
    found = [np.zeros((0, 128), np.float32)]
    for shot in (image, _on_dark_backdrop(image, config)):
        for _, _, view in _view_images(_grey_array(shot), config):
            found.append(_sift(view, config.sift_contrast_threshold)[2])
    return np.concatenate(found)


def _view_features(image: Image.Image, max_features: int, config: FeatureConfig) -> Features:
    grey = _grey_array(image)
    height, width = grey.shape
    share = max(1, max_features // len(_views(width, height, config)))
    all_points, all_descriptors = [], []
    for affine, scale, view in _view_images(grey, config):
        points, responses, descriptors, _ = _sift(view, config.sift_contrast_threshold)
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


def pin_mask(image: Image.Image, *, config: FeatureConfig = FeatureConfig(), rgb: np.ndarray | None = None
             ) -> np.ndarray:
    """Where the pin is in a product shot: pixels that differ from the backdrop (the border's median).

    ``rgb``: the image's RGB pixels, when the caller has converted it already.
    """
    import cv2

    pixels = np.asarray(image.convert("RGB")) if rgb is None else rgb
    ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).astype(np.int16)
    backdrop = np.median(ring, axis=0)
    # |pixel - backdrop| > threshold in any channel, by a 256-entry table per channel (no full-size temporaries)
    levels = np.arange(256, dtype=np.int16)
    far = [np.abs(levels - backdrop[c]) > config.foreground_difference_above for c in range(3)]
    mask = (far[0][pixels[..., 0]] | far[1][pixels[..., 1]] | far[2][pixels[..., 2]]).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def reference_entry(image: Image.Image, *, config: FeatureConfig = FeatureConfig()) -> ReferenceEntry:
    """Everything verification needs from one reference image."""
    rgb = np.asarray(image.convert("RGB"))
    found = pin_mask(image, config=config, rgb=rgb)
    box, colour = colour_thumbnail(rgb, found)
    return ReferenceEntry(_reference_features(image, None, config, rgb, found), box, colour)


def colour_thumbnail(rgb: np.ndarray, found: np.ndarray) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """The pin box of a product shot and its (T, T, 4) Lab thumbnail, whose alpha marks the wholly-pin pixels
    (``INSIDE_ALPHA``) and the rest of the pin's filled silhouette (``SILHOUETTE_ALPHA``).

    ``found``: the shot's ``pin_mask``; with (almost) nothing found the whole image is the pin.
    """
    import cv2

    mask = found
    if cv2.countNonZero(mask) < 16:  # no visible pin: the whole image is the pin
        box = (0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0]))
        mask = np.ones_like(mask)
    else:
        rows, columns = mask.any(axis=1), mask.any(axis=0)
        box = (float(np.argmax(columns)), float(np.argmax(rows)),
               float(len(columns) - np.argmax(columns[::-1])), float(len(rows) - np.argmax(rows[::-1])))
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    lab = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2LAB)
    size = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    thumbnail = cv2.resize(lab, size, interpolation=cv2.INTER_AREA)
    # a thumbnail pixel counts as pin only if it is wholly pin: edges mix in the backdrop
    inside = cv2.resize(mask[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99
    # the pin's whole silhouette (holes where enamel is as light as the backdrop filled), for the glance:
    # taken at full size, where a thin metal rim still closes the outline
    outline = filled(cv2.morphologyEx(mask[y0:y1, x0:x1], cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)))
    silhouette = cv2.resize(outline.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    alpha = np.where(inside, INSIDE_ALPHA, np.where(silhouette, SILHOUETTE_ALPHA, 0)).astype(np.uint8)
    return box, np.dstack([thumbnail, alpha])
