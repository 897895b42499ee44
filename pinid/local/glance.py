"""A whole-pin descriptor with no model: the pin's colours and silhouette, for candidates the vote misses.

The vote (:mod:`pinid.local.vote`) needs keypoints on the pin that match the
catalogue shot's. Plain, flat designs (flags, smileys, simple shapes) have few,
and a small or tinted pin in a photo has fewer still: on 120 photos of the full
benchmark the vote gave the true image no vote at all for about 40 %. A
glance at the whole pin still tells a red flag with a white cross from a blue
one with stars. This descriptor is that glance:

* **colours**: a 2 x 16 x 16 histogram of the pin's Lab pixels, each count
  spread over neighbouring bins (a tinted light shifts every colour a little),
  square-rooted (so that a dot product is the Hellinger affinity); it ignores
  rotation, mirroring, tilt and the pin's position;
* **silhouette**: three numbers of the pin's outline (spread, solidity,
  proportions) that ignore rotation, mirroring and scale and change slowly
  with tilt;
* **outline**: how much the pin's outline overlaps each reference's, both
  normalised by their second moments (which undoes any turn, scale and tilt:
  :mod:`pinid.local.silhouette`) and compared at the best turn, as taken or
  mirrored. A star, a shield, a cat's head: the outline is the one part of a
  plain pin that a photo keeps whole, and three numbers tell little of it.

Both are taken over the pin's filled outline: white enamel is pin in a photo
but may match a product shot's backdrop.

A reference image's descriptor comes from the colour thumbnail every index
stores (``colour.npy``: Lab pixels of the pin box, and in its alpha the pin's
filled silhouette, taken at full size), so it needs no array of its own; the
recogniser makes them on first use (about 0.5 ms an image: 1.2 s for 2,295).
A photo's pin is found as its most salient region: the part that differs most
from the colour of the photo's border, by Otsu's threshold, its largest
component, preferring one that does not touch the border.

Measured on the full benchmark (2,295 pins, seed 0; README, "The glance"):
alone, the glance ranks the true pin in the first 10 for 0.27 of 300 photos
(first for 0.11); as 10 of the 50 verified candidates it lifts the share of
150 photos whose true pin is verified from 0.45 to 0.61. It finds different
photos than the vote, and verification still decides. With the outline
(README, "The outline in the glance"; 300 photos of the second full benchmark,
seed 2) it ranks the true pin first for 0.227 (0.127 without) and in the first
10 for 0.390 (0.277), and the share of photos whose true pin is verified rises
from 0.740 to 0.780 at the same cost. Its similarity is also
evidence for the ranking (:mod:`pinid.identify.confidence`): a weak alignment of
a pin that looks nothing like the photo is likely chance.
"""

from __future__ import annotations

import numpy as np

from .silhouette import POLAR_ANGLES, POLAR_RADII, OutlineBank, Silhouette, silhouette

#: Histogram bins: lightness halves and a 16 x 16 grid of a* and b* over 64..192 (OpenCV's 8-bit Lab).
LIGHTNESS_BINS, CHROMA_BINS = 2, 16
HISTOGRAM_DIMS = LIGHTNESS_BINS * CHROMA_BINS * CHROMA_BINS
CHROMA_LOW, CHROMA_HIGH = 64, 128 + 64  # enamel colours rarely leave this range; outliers go to the edge bins
CHROMA_SPREAD_BINS = 1.5  # a count spreads over neighbouring chroma bins (Gaussian sigma): light tints shift hue
LIGHTNESS_SPREAD = 0.41  # ... and this share of it to the other lightness half
SHAPE_DIMS = 3  # first Hu moment (log), solidity, short-to-long side of the minimal box
_MIN_SHAPE_SPREAD = 0.05
_PROPOSAL_SIDE = 256  # a photo is reduced to this long side to find its pin
_MIN_PIXELS = 10
_REGIONS_SIDE = 512  # a board photo is reduced to this long side to find its pins
_REGION_MIN_PIXELS, _REGION_MIN_SHARE, _REGION_MAX_SHARE = 64, 0.0005, 0.3


def colour_histogram(lab_pixels: np.ndarray) -> np.ndarray:
    """Square-rooted, unit-sum, smoothed Lab histogram (HISTOGRAM_DIMS,) of (n, 3) uint8 pixels; zeros when
    too few."""
    import cv2

    pixels = np.asarray(lab_pixels).reshape(-1, 3).astype(np.float32)
    if len(pixels) < _MIN_PIXELS:
        return np.zeros(HISTOGRAM_DIMS, np.float32)
    width = (CHROMA_HIGH - CHROMA_LOW) / CHROMA_BINS
    lightness = np.clip(pixels[:, 0] / (256 / LIGHTNESS_BINS), 0, LIGHTNESS_BINS - 1).astype(np.int64)
    a = np.clip((pixels[:, 1] - CHROMA_LOW) / width, 0, CHROMA_BINS - 1).astype(np.int64)
    b = np.clip((pixels[:, 2] - CHROMA_LOW) / width, 0, CHROMA_BINS - 1).astype(np.int64)
    counts = np.bincount((lightness * CHROMA_BINS + a) * CHROMA_BINS + b, minlength=HISTOGRAM_DIMS)
    grid = counts.astype(np.float32).reshape(LIGHTNESS_BINS, CHROMA_BINS, CHROMA_BINS)
    grid = np.stack([cv2.GaussianBlur(plane, (0, 0), CHROMA_SPREAD_BINS, borderType=cv2.BORDER_CONSTANT)
                     for plane in grid])
    grid = grid + LIGHTNESS_SPREAD * grid[::-1]
    return np.sqrt(grid.ravel() / grid.sum()).astype(np.float32)


def shape_features(mask: np.ndarray) -> np.ndarray:
    """(SHAPE_DIMS,) numbers of a pin's silhouette that turning, mirroring and scale leave alone, and tilt
    moves little: the first Hu moment (log10), solidity (area over convex hull) and the short-to-long side
    ratio of the smallest enclosing box."""
    import cv2

    binary = (np.asarray(mask) > 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros(SHAPE_DIMS, np.float32)
    outline = max(contours, key=cv2.contourArea)
    hull = cv2.contourArea(cv2.convexHull(outline))
    (_, _), (width, height), _ = cv2.minAreaRect(outline)
    spread = float(cv2.HuMoments(cv2.moments(binary, True))[0, 0])
    return np.array([-np.log10(spread + 1e-30), cv2.contourArea(outline) / max(hull, 1.0),
                     min(width, height) / max(width, height, 1.0)], np.float32)


def filled(mask: np.ndarray) -> np.ndarray:
    """A binary mask with its holes filled (uint8 0/1).

    A product shot's mask holes wherever the enamel is as light as the backdrop
    (white fields, highlights); in a photo the same fields stand out from the
    table. Both sides are compared filled.
    """
    import cv2

    contours, _ = cv2.findContours((np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros(np.asarray(mask).shape[:2], np.uint8)
    return cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)


def reference_descriptors(colour: np.ndarray, geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour histograms (M, HISTOGRAM_DIMS), silhouettes (M, SHAPE_DIMS) and outline signatures (M,
    POLAR_RADII, POLAR_ANGLES; zeros where too small) of stored reference images.

    ``colour``: (M, T, T, 4) Lab thumbnails of the pin boxes with the pin mask
    in the last channel; ``geometry``: (M, 6) width, height and pin box. The
    square thumbnail's mask is stretched back to the box's proportions before
    its moments are taken.
    """
    import cv2

    count = len(colour)
    histograms = np.zeros((count, HISTOGRAM_DIMS), np.float32)
    shapes = np.zeros((count, SHAPE_DIMS), np.float32)
    outlines = np.zeros((count, POLAR_RADII, POLAR_ANGLES), np.float32)
    side = colour.shape[1] if count else 0
    for i in range(count):
        thumbnail = np.asarray(colour[i])
        # the stored silhouette (alpha > 0); an index made before it stored only the strict mask, which is
        # closed and filled here as well as a 48-pixel thumbnail allows
        inside = filled(cv2.morphologyEx((thumbnail[:, :, 3] > 0).astype(np.uint8), cv2.MORPH_CLOSE,
                                         np.ones((3, 3), np.uint8))) > 0
        histograms[i] = colour_histogram(thumbnail[:, :, :3][inside])
        box_width = float(geometry[i, 4] - geometry[i, 2])
        box_height = float(geometry[i, 5] - geometry[i, 3])
        aspect = box_width / box_height if box_width > 0 and box_height > 0 else 1.0
        size = (max(1, round(side * min(aspect, 1.0) * 2)), max(1, round(side / max(aspect, 1.0) * 2)))
        shapes[i] = shape_features(cv2.resize(inside.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST))
        # the thumbnail is the pin box squeezed square: its pixels, stretched back, are the box's proportions
        outline = silhouette(inside, np.diag([box_width / side if box_width > 0 else 1.0,
                                              box_height / side if box_height > 0 else 1.0, 1.0]))
        if outline is not None:
            outlines[i] = outline.signature
    return histograms, shapes, outlines


def _standing_out(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float, np.ndarray]:
    """The photo reduced to at most ``side`` px, the factor it was reduced by, and the mask (uint8 0/1) of what
    differs from the colours of its border, by Otsu's threshold; lightness counts half (shadows and light falloff
    move it)."""
    import cv2

    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB)
    smooth = cv2.GaussianBlur(lab, (0, 0), 2).astype(np.float32)
    band = max(1, min(8, min(small.shape[:2]) // 8))
    ring = np.concatenate([smooth[:band].reshape(-1, 3), smooth[-band:].reshape(-1, 3),
                           smooth[:, :band].reshape(-1, 3), smooth[:, -band:].reshape(-1, 3)])
    distance = np.linalg.norm((smooth - np.median(ring, axis=0)) * np.float32([0.5, 1.0, 1.0]), axis=2)
    _, mask = cv2.threshold(np.clip(distance * 4, 0, 255).astype(np.uint8), 0, 1,
                            cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return small, scale, cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))


def pin_regions(rgb: np.ndarray, most: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1 in ``rgb``'s pixels, largest first, at most ``most``) of the separate things that
    stand out from a board's backdrop: each is likely one pin, which can then be identified as a single-pin
    photo is.

    A board's pins lie apart on one cloth, so what differs from the colours of
    the photo's border (``_standing_out``, at up to _REGIONS_SIDE px, gaps of a
    few pixels closed) falls into one component per pin. Specks and anything
    over _REGION_MAX_SHARE of the photo (a lighting gradient, a hand) are no pin.
    """
    import cv2

    small, scale, mask = _standing_out(rgb, _REGIONS_SIDE)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    total = small.shape[0] * small.shape[1]
    found = [(int(area), x, y, w, h) for x, y, w, h, area in stats[1:].tolist()
             if max(_REGION_MIN_PIXELS, _REGION_MIN_SHARE * total) <= area <= _REGION_MAX_SHARE * total]
    found.sort(key=lambda item: -item[0])
    height, width = rgb.shape[:2]
    return [(int(x / scale), int(y / scale), min(width, int(np.ceil((x + w) / scale))),
             min(height, int(np.ceil((y + h) / scale)))) for _, x, y, w, h in found[:most]]


def salient_region(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The photo reduced to at most _PROPOSAL_SIDE px, as Lab, and the mask of its likely pin (or None).

    The pin is taken to be what differs most from the photo's border colours
    (``_standing_out``), a component touching the border counting three tenths
    of its area (table edges, hands).
    """
    import cv2

    small, _, mask = _standing_out(rgb, _PROPOSAL_SIDE)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if count <= 1:
        return None
    rows, columns = small.shape[:2]
    best, best_score = 0, 0.0
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        touches = x == 0 or y == 0 or x + w >= columns or y + h >= rows
        score = area * (0.3 if touches else 1.0)
        if score > best_score:
            best, best_score = label, score
    region = filled(cv2.morphologyEx((labels == best).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8)))
    if int(region.sum()) < _MIN_PIXELS:
        return None
    return cv2.cvtColor(cv2.GaussianBlur(np.ascontiguousarray(small), (0, 0), 1), cv2.COLOR_RGB2LAB), region


#: What ``salient_region`` finds: the photo reduced to at most 256 px, as Lab, and the mask of its likely pin.
Salient = tuple[np.ndarray, np.ndarray]


def photo_silhouette(rgb: np.ndarray, found: Salient | None = None) -> Silhouette | None:
    """The silhouette (in ``rgb``'s pixels) of the photo's most salient region (``found``, when already
    made, else found here), or None when none stands out or it touches the photo's edge: what an outline
    alignment (``pinid.local.verify.outline_alignment``) brings a reference's silhouette onto.

    A region the edge cuts has no whole outline, and its moments are not the
    pin's; often it is no pin at all but a ribbon or a paper scrap running out
    of the frame (on 300 full-benchmark photos, 3 of the 6 where an outline
    alignment put a wrong pin first).
    """
    found = salient_region(rgb) if found is None else found
    if found is None:
        return None
    _, region = found
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        return None
    sx, sy = rgb.shape[1] / region.shape[1], rgb.shape[0] / region.shape[0]
    # a reduced pixel i covers photo pixels [i * s, (i + 1) * s): its centre is at (i + 0.5) * s - 0.5
    return silhouette(region, np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]]))


def photo_descriptor(rgb: np.ndarray, found: Salient | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The colour histogram and silhouette of a photo's most salient region (``found``, when already made),
    or None when none stands out."""
    found = salient_region(rgb) if found is None else found
    if found is None:
        return None
    lab, region = found
    return colour_histogram(lab[region > 0]), shape_features(region)


def _spreads(values: np.ndarray) -> np.ndarray:
    """``values`` less their mean, in units of their spread (z-scores)."""
    return (values - values.mean()) / (values.std() + 1e-9)


class GlanceIndex:
    """Reference descriptors ready to rank a photo's glance against (exhaustive: M x 515 numbers and M
    outline spectra).

    The score is the colour affinity, in units of its spread over the
    catalogue, less ``shape_weight`` times each silhouette number's distance,
    in units of that number's spread over the catalogue (floored, so that in
    a catalogue of one shape the photo's tilt decides nothing); that, in
    spreads over the catalogue, plus ``outline_weight`` times the outline
    overlap in spreads over the catalogue. Outline and the rest weigh the same
    (``outline_weight`` 1): on two samples of 300 photos of the full benchmark,
    weights from 0.75 to 2 put the true pin in the glance's first 10 within
    0.015 of each other, 0.5 a little less often, and 0 (no outline) for 0.09
    to 0.11 fewer photos.
    """

    def __init__(self, image_ids: np.ndarray, histograms: np.ndarray, shapes: np.ndarray,
                 outlines: np.ndarray | None = None, shape_weight: float = 0.3, outline_weight: float = 1.0) -> None:
        self.image_ids = np.asarray(image_ids, np.int64)
        self.histograms = np.asarray(histograms, np.float32)
        shapes = np.asarray(shapes, np.float32).reshape(-1, SHAPE_DIMS)
        self.shape_mean = shapes.mean(axis=0) if len(shapes) else np.zeros(SHAPE_DIMS, np.float32)
        # floored: in a catalogue of one shape (all round, all square) tilt noise must not count as a difference
        self.shape_scale = np.maximum(shapes.std(axis=0), _MIN_SHAPE_SPREAD) if len(shapes) else np.ones(SHAPE_DIMS)
        self.shapes = ((shapes - self.shape_mean) / self.shape_scale).astype(np.float32)
        self.shape_weight = shape_weight
        # no outlines given (or all empty): the glance is colours and silhouette numbers alone
        self.outlines = None if outlines is None or not np.any(outlines) else OutlineBank(outlines)
        self.outline_weight = outline_weight
        self.rows = {int(image_id): row for row, image_id in enumerate(self.image_ids.tolist())}

    def __len__(self) -> int:
        return len(self.image_ids)

    def similarities(self, rgb: np.ndarray, found: Salient | None = None) -> np.ndarray | None:
        """How like the photo's pin (``found``: its salient region, when already made) each reference image
        looks, in spreads over the catalogue (z-scores, in ``image_ids`` order), or None when no pin stands
        out in the photo.

        Standardised over the catalogue, so that the number means the same in a
        catalogue of 50 pins as in one of 5,000: the ranking model weighs it as
        evidence (a weak alignment of a pin that looks nothing like the photo is
        likely chance).
        """
        if not len(self):
            return None
        found = salient_region(rgb) if found is None else found
        seen = None if found is None else photo_descriptor(rgb, found)
        if found is None or seen is None:
            return None
        histogram, shape = seen
        colour = self.histograms @ histogram
        score = colour / (colour.std() + 1e-9)
        if self.shape_weight:
            closeness = -np.abs(self.shapes - (shape - self.shape_mean) / self.shape_scale)
            score = score + self.shape_weight * closeness.sum(axis=1)
        score = _spreads(score)
        if self.outlines is not None and self.outline_weight:
            # the region as found, even where the photo's edge cuts it: a likeness, not a map to trust
            outline = silhouette(found[1], np.eye(3))
            if outline is not None:
                score = _spreads(score + self.outline_weight * _spreads(self.outlines.overlaps(outline)))
        return score

    def rank(self, rgb: np.ndarray, count: int) -> list[int]:
        """The ``count`` reference image ids whose glance is nearest the photo's, nearest first."""
        found = self.similarities(rgb) if count > 0 else None
        return [] if found is None else self.best(found, count)

    def best(self, similarities: np.ndarray, count: int) -> list[int]:
        """The ``count`` reference image ids of highest ``similarities`` (as ``similarities`` gave them)."""
        count = min(count, len(similarities))
        if count <= 0:
            return []
        top = np.argpartition(-similarities, count - 1)[:count]
        top = top[np.argsort(-similarities[top], kind="stable")]
        return self.image_ids[top].tolist()
