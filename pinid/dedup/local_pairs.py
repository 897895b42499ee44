"""Same-pin dedup with no model: listings find and confirm each other by their own local features.

Without CLIP weights there are no embeddings to compare, so ``pinid dedup
--encoder local`` works from what every photo carries itself:

* **Features**, once per file content: SIFT (``pinid.local.features.query_features``)
  at ``long_side_px``, the strongest ``max_features`` kept, cached by content in
  ``CACHE_DIR/local-features/listings`` (a ``pinid.local.cache.FeatureCache``
  of its own: these are photo features, not a product shot's), so a re-run
  extracts only new files.
* **Candidates**: the strongest ``vote_features`` of every listing go into one
  FAISS vocabulary (``pinid.local.vote``: exact up to 60,000 descriptors, an
  inverted file above), and each listing's features vote for the others, as a
  photo votes for reference images when identifying; each listing proposes
  its ``candidates`` best. Photo hashes propose pairs as in photo mode.
* **Confirmation** (:class:`PairVerifier`, plugged into
  ``DedupOptions.verifier``): ratio-test matches between the two photos, a
  Hough filter on the rotation and scale they imply, RANSAC for one affine
  map, then checks that suit two photos rather than a photo and a product
  shot (``pinid.local.verify`` projects the product shot's outline; a listing
  has none): enough distinct inliers; inliers spread in two dimensions (a
  watermark or price tag such as "SAMPLE" or "SOLD" recurs across listings of
  different pins and matches as a thin line of text) over a plausible share of
  both photos (neither a speck nor the whole scene: a seller's desk under
  different pins); and the hue of the matched region's colours agreeing
  (colourways of one design share every keypoint and differ only in colour).

Every threshold is one frozen :class:`LocalDedupConfig`. The defaults were
chosen on listings generated with seeds 3 to 6 (``pinid.synth.generate`` with
listings only), never on the benchmark's; ``scripts/eval_dedup_local.py``
measures them. On the full benchmark's 1,499 listings: pairwise precision
0.988, recall 0.362 against ``pin_id``.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from ..errors import ImageError, InputError
from ..images import load_image
from ..local.config import Config, check
from ..local.features import THUMBNAIL_SIDE, FeatureConfig, Features, ReferenceEntry, query_features
from ..results import Progress
from .group import DedupOptions, DedupReport, find_groups, group_stats
from .listings import Listing

if TYPE_CHECKING:
    from ..encoder.cache import EmbeddingCache, EmbedOptions
    from ..local.cache import FeatureCache

#: The sub-folder of ``CACHE_DIR/local-features`` that holds listing photos' features.
LISTING_FEATURES_DIR = "listings"


@dataclass(frozen=True)
class LocalDedupConfig(Config):
    """How listing photos are described, which pairs are proposed, and when a pair is the same pin."""

    long_side_px: int = 640  # photos are reduced to this long side before SIFT (1,024: no more pairs confirmed)
    max_features: int = 800  # strongest SIFT keypoints kept per photo (most photos have fewer at 640 px)
    vote_features: int = 200  # strongest features per listing in the shared vocabulary, and voting
    candidates: int = 16  # other listings each listing proposes, best votes first
    # the vote's ratio test compares with the 8th-nearest other listing: re-uploads of one photo are alike, and
    # with the 1st the listing itself (in the vocabulary too) would be the only one to count
    background_rank: int = 8
    inverted_lists_probed: int = 8
    ratio_test_max: float = 0.8  # Lowe's ratio between the two photos' descriptors
    max_reprojection_share: float = 0.01  # RANSAC threshold, share of the first photo's long side
    distinct_cells_per_side: int = 64  # grid on which distinct inliers are counted
    min_distinct_inliers: int = 10  # 8 confirmed a few watermark matches on seeds 5 and 6 (the guard caught them)
    min_inlier_spread: float = 0.3  # short / long side of the inliers' rotated bounding box (text: ~0.1)
    min_inlier_area_share: float = 0.01  # inliers' hull, as a share of each photo
    # ... and at most this (the smaller share): a match over most of both photos is the scene (a seller's desk
    # under different pins), not a pin; one photo re-uploaded is photo mode's "same_photo". Generated seller
    # photos of one pin: at most 0.15
    max_inlier_area_share: float = 0.5
    max_anisotropy: float = 3.0  # singular-value ratio of the affine map (tilt up to about 70 degrees)
    max_hue_difference_deg: float = 35.0  # area-weighted hue angle between matched colour regions
    min_chroma: float = 10.0  # Lab chroma below which a region is grey and its hue is not compared
    colour_regions: int = 4  # k-means clusters of the matched region compared by hue
    colour_side_px: int = 64  # the matched region is compared at about this many pixels across

    def __post_init__(self) -> None:
        for name in ("long_side_px", "max_features", "vote_features", "candidates", "inverted_lists_probed",
                     "distinct_cells_per_side", "colour_regions", "colour_side_px", "min_distinct_inliers"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1")
        check(self.background_rank >= 1, "background_rank must be at least 1")
        check(0 < self.ratio_test_max <= 1, "ratio_test_max must be in (0, 1]")
        check(self.max_reprojection_share > 0, "max_reprojection_share must be above 0")
        check(0 <= self.min_inlier_spread <= 1, "min_inlier_spread must be in [0, 1]")
        check(0 <= self.min_inlier_area_share <= self.max_inlier_area_share <= 1,
              "need 0 <= min_inlier_area_share <= max_inlier_area_share <= 1")
        check(self.max_anisotropy >= 1, "max_anisotropy must be at least 1")
        check(0 <= self.max_hue_difference_deg <= 180, "max_hue_difference_deg must be in [0, 180]")
        check(self.min_chroma >= 0, "min_chroma must be at least 0")

    def feature_config(self) -> FeatureConfig:
        """The ``FeatureConfig`` that listing photos are extracted with (and the feature cache is keyed on)."""
        return FeatureConfig(query_long_side_px=self.long_side_px, max_query_features=self.max_features)


# ------------------------------------------------------------------ no model
@dataclass
class _NoVectors:
    vectors: np.ndarray
    ok: list[int]
    failures: list[tuple[int, str]]


class PhotoHashOnly:
    """The encoder of ``--encoder local``: no model, no vectors; ``embed_files`` still hashes every photo.

    Its vectors have no dimensions, so every cosine is 0 and only photo hashes,
    geometric confirmation and a verifier relate listings.
    """

    image_size = 224  # photos are decoded for their photo hash as for a CLIP encoder: the same hashes

    def identity(self) -> dict[str, Any]:
        return {"model": "none (--encoder local: photo hashes and local features)", "embedding_dim": 0}

    def encode_images(self, sources: Sequence[Any], *, batch_size: int = 32, workers: int = 2,
                      on_progress: Any = None) -> _NoVectors:
        return _NoVectors(np.zeros((len(sources), 0), np.float32), list(range(len(sources))), [])


# ------------------------------------------------------------------ features
class ListingFeatures:
    """Local features of listing photos by content row: cached ones read back, missing ones extracted.

    Reads go through the cache (memory-mapped) and a small in-memory LRU, so
    100,000 listings never sit in memory at once. A cache that another process
    is writing (read-only here) keeps this run's extractions in memory instead.
    """

    def __init__(self, cache: "FeatureCache", digests: Sequence[bytes], config: LocalDedupConfig,
                 lru: int = 4096) -> None:
        self.cache, self.digests, self.config = cache, list(digests), config
        self.extracted = 0
        self.failures: dict[int, str] = {}  # content row -> why its features could not be made
        self._kept: dict[int, Features] = {}  # extractions a read-only cache could not keep
        self._lru: OrderedDict[int, Features] = OrderedDict()
        self._lru_size = lru

    def extract_missing(self, paths: Sequence[Path], workers: int = 2, on_progress: Progress | None = None) -> int:
        """Extract the features of every content row the cache lacks (``paths[row]``: a file with it)."""
        missing = [row for row, digest in enumerate(self.digests) if digest not in self.cache]
        feature_config = self.config.feature_config()
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pinid-features") as pool:
            for done, (row, entry) in enumerate(zip(missing, pool.map(
                    lambda r: listing_entry(paths[r], self.digests[r], feature_config), missing)), 1):
                if isinstance(entry, str):
                    self.failures[row] = entry
                else:
                    self.cache.put(self.digests[row], entry)
                    if not self.cache.writable:
                        self._kept[row] = entry.features
                    self.extracted += 1
                if on_progress is not None and (done % 16 == 0 or done == len(missing)):
                    on_progress("features", done, len(missing))
        self.cache.flush()
        return self.extracted

    def __len__(self) -> int:
        return len(self.digests)

    def get(self, row: int) -> Features:
        """The features of one content row (empty when they could not be made)."""
        found = self._lru.get(row)
        if found is not None:
            self._lru.move_to_end(row)
            return found
        features = self._kept.get(row)
        if features is None:
            entry = self.cache.get(self.digests[row]) if row not in self.failures else None
            features = entry.features if entry is not None else _no_features()
        self._lru[row] = features
        while len(self._lru) > self._lru_size:
            self._lru.popitem(last=False)
        return features


def _no_features() -> Features:
    return Features(np.zeros((0, 4), np.float32), np.zeros((0, 64), np.uint8), 1, 1)


def listing_entry(path: Path, expected: bytes, config: FeatureConfig) -> ReferenceEntry | str:
    """One listing photo's features as a cache entry (the whole photo as its box), or why it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if hashlib.sha256(data).digest() != expected:
        return "file changed while dedup was running; run again"
    try:
        image = load_image(data, min_side=config.query_long_side_px)
    except ImageError as exc:
        return exc.reason
    return listing_entry_of_image(image, config)


def listing_entry_of_image(image: Image.Image, config: FeatureConfig) -> ReferenceEntry:
    """The cache entry of a decoded listing photo: its features, and the whole photo as its box."""
    import cv2

    features = query_features(image, config=config)
    lab = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB)
    thumbnail = cv2.resize(lab, (THUMBNAIL_SIDE, THUMBNAIL_SIDE), interpolation=cv2.INTER_AREA)
    colour = np.dstack([thumbnail, np.zeros(thumbnail.shape[:2], np.uint8)])  # no pin mask: a photo's pin is unknown
    return ReferenceEntry(features, (0.0, 0.0, float(image.width), float(image.height)), colour)


# ---------------------------------------------------------------- candidates
def vote_pairs(features: ListingFeatures, config: LocalDedupConfig = LocalDedupConfig(), *, seed: int = 0,
               on_progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(left, right)`` of content rows, ``left < right``, from a vote among the listings.

    Each listing puts its strongest ``vote_features`` descriptors (fewer when
    the vote's 1 GB budget would not hold them all) into one vocabulary and
    votes with the same descriptors; it proposes the ``candidates`` other
    listings with the most votes. Memory: about 90 bytes per vocabulary
    descriptor (codes, id, keypoint, owner). Time: one search per listing; in
    an inverted file each scans ``inverted_lists_probed`` lists, which grow
    with the number of listings once the list count stops at 4,096.
    """
    from ..local.vote import VoteConfig, build_vocabulary, vote, vote_descriptors_per_image

    count = len(features)
    vote_config = VoteConfig(background_image_rank=config.background_rank,
                             neighbours_per_descriptor=max(16, 3 * config.background_rank),
                             inverted_lists_probed=config.inverted_lists_probed,
                             translation_bin_share=0.0)  # listings' keypoints are in pixels, not a pin's frame
    # the vote's memory budget (1 GB) caps each listing's share: 149 descriptors each at 100,000 listings
    cap = min(config.vote_features, vote_descriptors_per_image(vote_config, count) or config.vote_features)
    sizes = np.zeros(count, np.int64)
    for row in range(count):
        sizes[row] = min(cap, len(features.get(row)))
    total = int(sizes.sum())
    if count < 2 or total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    descriptors = np.empty((total, 64), np.uint8)
    keypoints = np.empty((total, 4), np.float32)
    owner = np.repeat(np.arange(count, dtype=np.int64), sizes)
    start = 0
    for row in range(count):
        if sizes[row]:
            found = features.get(row)
            descriptors[start:start + sizes[row]] = found.descriptors[:sizes[row]]
            keypoints[start:start + sizes[row]] = found.keypoints[:sizes[row]]
            start += int(sizes[row])
    vocabulary = build_vocabulary(descriptors, seed, config=vote_config)
    lefts, rights = [], []
    ends = np.cumsum(sizes)
    for row in range(count):
        if sizes[row]:
            part = slice(int(ends[row] - sizes[row]), int(ends[row]))
            images, totals = vote(vocabulary, owner, descriptors[part], keypoints[part], keypoints,
                                  config=vote_config)
            others = images[(images != row) & (totals > 0)][:config.candidates]
            lefts.append(np.minimum(others, row))
            rights.append(np.maximum(others, row))
        if on_progress is not None and ((row + 1) % 64 == 0 or row + 1 == count):
            on_progress("candidates", row + 1, count)
    if not lefts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    key = np.unique(np.concatenate(lefts) * count + np.concatenate(rights))
    return key // count, key % count


# -------------------------------------------------------------- verification
@dataclass(frozen=True)
class PairMatch:
    """How two listing photos line up: ``affine`` maps the second photo's pixels onto the first's."""

    matches: int
    inliers: int
    distinct_inliers: int
    spread: float  # short / long side of the first photo's inliers' rotated bounding box
    area_share: float  # the smaller of the inliers' hull areas as a share of each photo
    affine: np.ndarray | None
    points: np.ndarray  # (inliers, 2) positions in the first photo

    @property
    def aligned(self) -> bool:
        return self.affine is not None


def _no_match(matches: int = 0) -> PairMatch:
    return PairMatch(matches, 0, 0, 0.0, 0.0, None, np.zeros((0, 2), np.float32))


def match_pair(first: Features, second: Features, config: LocalDedupConfig = LocalDedupConfig()) -> PairMatch:
    """Ratio-test matches, a Hough filter on rotation and scale, RANSAC for one affine map (second -> first)."""
    import cv2

    from ..local.verify import VerifyConfig, hough_filter, match_all

    (first_rows, second_rows), = match_all(second, [first], config=VerifyConfig(ratio_test_max=config.ratio_test_max))
    matches = len(first_rows)
    if matches < 4:
        return _no_match(matches)
    first_kp, second_kp = first.keypoints[first_rows], second.keypoints[second_rows]
    keep = hough_filter(first_kp, second_kp)
    if keep.sum() < 4:
        return _no_match(matches)
    first_xy = np.ascontiguousarray(first_kp[keep, :2], dtype=np.float32)
    second_xy = np.ascontiguousarray(second_kp[keep, :2], dtype=np.float32)
    long_side = float(max(first.width, first.height))
    affine, mask = cv2.estimateAffine2D(second_xy, first_xy, method=cv2.RANSAC,
                                        ransacReprojThreshold=config.max_reprojection_share * long_side,
                                        maxIters=4000, confidence=0.995)
    if affine is None or mask is None or mask.sum() < 3:
        return _no_match(matches)
    inlier = mask.ravel().astype(bool)
    singular = np.linalg.svd(affine[:, :2], compute_uv=False)
    if singular[1] <= 1e-6 or singular[0] / singular[1] > config.max_anisotropy or np.linalg.det(affine[:, :2]) <= 0:
        return _no_match(matches)  # degenerate, too oblique, or mirrored (SIFT does not match mirrors anyway)
    here, there = first_xy[inlier], second_xy[inlier]
    cells = config.distinct_cells_per_side
    distinct = min(_distinct(here, long_side / cells), _distinct(there, max(second.width, second.height) / cells))
    (_, _), (width, height), _ = cv2.minAreaRect(here)
    spread = float(min(width, height) / max(width, height, 1e-6))
    area = min(cv2.contourArea(cv2.convexHull(here)) / (first.width * first.height),
               cv2.contourArea(cv2.convexHull(there)) / (second.width * second.height))
    return PairMatch(matches, int(inlier.sum()), distinct, spread, float(area), affine, here)


def _distinct(points: np.ndarray, cell: float) -> int:
    return len(np.unique(np.floor(points / max(cell, 1e-6)).astype(np.int64), axis=0))


def geometry_agrees(found: PairMatch, config: LocalDedupConfig = LocalDedupConfig()) -> bool:
    """Enough distinct inliers, spread in two dimensions over a plausible share of both photos."""
    return (found.aligned and found.distinct_inliers >= config.min_distinct_inliers
            and found.spread >= config.min_inlier_spread
            and config.min_inlier_area_share <= found.area_share <= config.max_inlier_area_share)


def hue_difference(first_lab: np.ndarray, second_lab: np.ndarray, found: PairMatch, first_scale: float,
                   second_scale: float, config: LocalDedupConfig = LocalDedupConfig()) -> float:
    """Area-weighted hue angle (degrees) between the matched region of two photos, region by region.

    The matched region is the inliers' convex hull in the first photo; the
    second is warped onto it. Its pixels are split into ``colour_regions``
    by k-means in the first photo, and each region's median chroma (Lab a, b)
    is compared by angle: light and white balance move lightness and chroma
    much more than hue, while a colourway turns the hue of every enamel.
    Regions that are grey in either photo are left out; 0 when none is left.
    ``*_scale``: pixels of each Lab image per feature coordinate.
    """
    import cv2

    from ..local.verify import colour_regions

    assert found.affine is not None
    hull = cv2.convexHull(found.points.astype(np.float32)).reshape(-1, 2)
    x0, y0 = hull.min(axis=0)
    x1, y1 = hull.max(axis=0)
    side = config.colour_side_px / max(x1 - x0, y1 - y0, 1e-6)  # crop pixels per feature coordinate
    size = (max(1, int(np.ceil((x1 - x0) * side))), max(1, int(np.ceil((y1 - y0) * side))))
    to_crop = np.array([[side, 0, -x0 * side], [0, side, -y0 * side], [0, 0, 1]])
    first_map = to_crop @ np.diag([1 / first_scale, 1 / first_scale, 1])
    second_map = to_crop @ np.vstack([found.affine, [0, 0, 1]]) @ np.diag([1 / second_scale, 1 / second_scale, 1])
    first = _warp(first_lab, first_map, size)
    second = _warp(second_lab, second_map, size)
    valid = cv2.warpAffine(np.full(second_lab.shape[:2], 255, np.uint8), second_map[:2], size,
                           flags=cv2.INTER_NEAREST) > 0
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillConvexPoly(mask, np.round((hull - [x0, y0]) * side).astype(np.int32), 1)
    inside = (mask > 0) & valid
    if inside.sum() < 16:
        return 0.0
    here, there = first[inside].astype(np.float32), second[inside].astype(np.float32)
    labels = colour_regions(here, config.colour_regions)
    total = weight = 0.0
    for region in np.unique(labels):
        members = labels == region
        a = np.median(here[members], axis=0)[1:] - 128.0
        b = np.median(there[members], axis=0)[1:] - 128.0
        norms = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        if min(norms) < config.min_chroma:
            continue
        angle = float(np.degrees(np.arccos(np.clip(float(a @ b) / (norms[0] * norms[1]), -1.0, 1.0))))
        total += angle * int(members.sum())
        weight += int(members.sum())
    return total / weight if weight else 0.0


def _warp(image: np.ndarray, affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resampled into a crop by a 3 x 3 affine (image -> crop), blurred first when it shrinks."""
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
    if scale < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), 0.5 / scale)
    return cv2.warpAffine(image, affine[:2], size, flags=cv2.INTER_LINEAR)


class PairVerifier:
    """``DedupOptions.verifier`` for ``--encoder local``: are two listings photos of the same pin?

    Geometry first (cheap, from cached features); the colour check loads the
    two photos only for pairs that line up. Verdicts are kept per pair, and
    photos' Lab images in a small LRU.
    """

    def __init__(self, features: ListingFeatures, rows: dict[Listing, int], paths: Sequence[Path],
                 config: LocalDedupConfig = LocalDedupConfig(), lab_cache: int = 256) -> None:
        self.features, self.rows, self.paths, self.config = features, rows, list(paths), config
        self.checked = 0
        self._verdicts: dict[tuple[int, int], bool] = {}
        self._labs: OrderedDict[int, tuple[np.ndarray, float] | None] = OrderedDict()
        self._lab_cache = lab_cache

    def __call__(self, listing: Listing, other: Listing, score: float) -> bool:
        a, b = self.rows[listing], self.rows[other]
        key = (min(a, b), max(a, b))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self.same_pin(*key)
        return verdict

    def same_pin(self, a: int, b: int) -> bool:
        """The verdict for two content rows (not cached)."""
        self.checked += 1
        first, second = self.features.get(a), self.features.get(b)
        if len(first) < 4 or len(second) < 4:
            return False
        found = match_pair(first, second, self.config)
        if not geometry_agrees(found, self.config):
            return False
        first_lab, second_lab = self._lab(a), self._lab(b)
        if first_lab is None or second_lab is None:
            return False
        difference = hue_difference(first_lab[0], second_lab[0], found, first_lab[1] / first.width,
                                    second_lab[1] / second.width, self.config)
        return difference <= self.config.max_hue_difference_deg

    def _lab(self, row: int) -> tuple[np.ndarray, float] | None:
        """A photo in Lab at about 320 px (and its width), or None if it cannot be read now."""
        import cv2

        if row in self._labs:
            self._labs.move_to_end(row)
            return self._labs[row]
        try:
            image = load_image(self.paths[row], min_side=320)
        except ImageError:
            found = None
        else:
            scale = min(1.0, 320 / max(image.size))
            if scale < 1.0:
                image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
            found = (cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2LAB), float(image.width))
        self._labs[row] = found
        while len(self._labs) > self._lab_cache:
            self._labs.popitem(last=False)
        return found


# --------------------------------------------------------------------- the job
def dedup_local(listings: Sequence[Listing], cache: "EmbeddingCache", feature_cache: "FeatureCache | None",
                options: DedupOptions = DedupOptions(), config: LocalDedupConfig = LocalDedupConfig(),
                embed_options: "EmbedOptions | None" = None, on_progress: Progress | None = None,
                digests: Sequence[bytes | str] | None = None) -> DedupReport:
    """Group ``listings`` with no model: `pinid dedup --encoder local`.

    ``cache`` must have been opened for :class:`PhotoHashOnly` (photo hashes by
    content); ``feature_cache`` holds listing features (see
    :func:`open_feature_cache`; pin mode only). Photo mode uses photo hashes
    and their geometric confirmation only; pin mode adds the local-feature
    candidates and :class:`PairVerifier`. The report's ``encoded`` counts
    photos whose features (pin mode) or photo hashes (photo mode) were made in
    this run. ``digests``: each listing image's sha256 when already known (``embed_files``).

    Raises:
        InputError: pin mode without a ``feature_cache``.
    """
    from ..encoder.cache import EmbedOptions, embed_files

    if options.mode == "pin" and feature_cache is None:
        raise InputError("pin mode with --encoder local needs a local-feature cache (open_feature_cache)")
    started = time.perf_counter()
    embed_options = embed_options or EmbedOptions()
    paths = [listing.image for listing in listings]
    embedded = embed_files(paths, PhotoHashOnly(), cache, embed_options, on_progress, digests=digests)
    encoded, cached = embedded.encoded, embedded.cached
    candidates = None
    if feature_cache is not None and options.mode == "pin":
        first = {}
        for position, row in enumerate(embedded.content_of.tolist()):
            if row >= 0:
                first.setdefault(row, position)
        row_paths = [paths[first[row]] for row in range(len(embedded.digests))]
        features = ListingFeatures(feature_cache, embedded.digests, config)
        encoded = features.extract_missing(row_paths, embed_options.workers, on_progress)
        cached = len(embedded.digests) - encoded
        candidates = vote_pairs(features, config, on_progress=on_progress)
        rows = {listing: int(row) for listing, row in zip(listings, embedded.content_of.tolist()) if row >= 0}
        options = replace(options, verifier=PairVerifier(features, rows, row_paths, config), verify_floor=-1.0)
    found = find_groups(listings, embedded, options, on_progress, candidates=candidates)
    return DedupReport(found, encoded, cached, time.perf_counter() - started, group_stats(found))


def open_feature_cache(cache_dir: str | Path, config: LocalDedupConfig = LocalDedupConfig(), *,
                       reset: bool = False) -> "FeatureCache":
    """The listing-feature cache beside a dedup cache: ``CACHE_DIR/local-features/listings``."""
    from ..encoder.cache import FEATURE_CACHE_DIR
    from ..local.cache import FeatureCache

    return FeatureCache.open(Path(cache_dir) / FEATURE_CACHE_DIR / LISTING_FEATURES_DIR, config.feature_config(),
                             reset=reset)


__all__ = ["LISTING_FEATURES_DIR", "ListingFeatures", "LocalDedupConfig", "PairMatch", "PairVerifier",
           "PhotoHashOnly", "dedup_local", "geometry_agrees", "hue_difference", "listing_entry",
           "listing_entry_of_image", "match_pair", "open_feature_cache", "vote_pairs"]
