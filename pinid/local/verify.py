"""Geometric and colour verification of candidate reference images against one photo.

For each candidate: ratio-test matches of its descriptors against the
photo's, a Hough-style filter on the rotation and scale each match implies,
an affine map that one match's keypoints propose and the most matches follow
(``seeded_affine``), then a homography, and a sanity check of that
homography (convex, not degenerate, plausible scale and tilt). The photo is
then warped onto the reference pin's box and compared densely: its colours,
enamel region by enamel region, in Lab (colourways of one design share every
keypoint and differ only there), and its edges (does every border of the pin
line up, or only the few keypoints a chance alignment agrees on?).

All candidates are matched in one exact FAISS search of their stacked
descriptors against the photo's, which keeps K=50 within the time budget
(``scripts/bench_verify.py``). The tunables are one frozen ``VerifyConfig``,
written whole into each index's manifest.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from .config import Config, check
from .features import INSIDE_ALPHA, THUMBNAIL_SIDE, Features, ReferenceEntry
from .silhouette import Silhouette, outline_maps, silhouette


_MATCH_CHUNK = 8  # references matched at once ahead of the geometry (_matched_ahead)


@dataclass(frozen=True)
class VerifyConfig(Config):
    """When a candidate counts as aligned, and how its colours are compared."""

    ratio_test_max: float = 0.9  # Lowe's ratio, reference -> photo (0.85 lost a third of correct matches)
    min_matches: int = 5  # ratio-test matches, before and after the Hough filter
    min_inliers: int = 4  # inliers of the affine map; pins show few keypoints, the calibrated models weigh how many
    max_reprojection_share: float = 0.02  # inlier threshold as a share of the reference image's long side
    # of the one-match similarity proposals (seeded_affine), how many are refined to an affine map; 0: three-point
    # RANSAC instead (ransac_max_iterations, ransac_confidence)
    seeded_affine: int = 50
    seed_loose_factor: float = 5.0  # how far (times the threshold) a proposal's followers may lie
    ransac_max_iterations: int = 4000
    ransac_confidence: float = 0.995
    homography_min_inliers: int = 8  # affine inliers needed before a full homography is tried
    # ... and the share of the pin's outline their hull must cover: inliers in one band leave a
    # homography's perspective free, and its outline then swings far off the pin (the affine holds)
    homography_min_spread: float = 0.1
    distinct_cells_per_side: int = 64  # grid over the reference on which distinct inliers are counted
    max_anisotropy: float = 4.0  # singular-value ratio of the map: tilt up to about 75 degrees
    min_pin_area_px: float = 576.0  # 24 x 24: the pin must cover at least this much of the photo
    max_colour_regions: int = 6  # enamel regions (k-means clusters of the reference) compared by colour
    # 1: take the light's brightness and tint out before comparing colours (0: compare them as seen). On 150
    # full-benchmark photos it moved the true pin's median distance from 26 to 13 and others' from 49 to 39
    balance_illumination: int = 1
    # how far the light may tint one channel against the others: 1.0 (brightness only) and 1.2 ranked alike there,
    # 2.0 let other pins come closer; 1.2 leaves room for the casts of real lights
    max_illumination_tint: float = 1.2
    # 1: where the inliers fit no sane affine map, try a similarity (rotation, scale, place) on the same matches,
    # and keep it when the photo's edges follow the reference's (similarity_min_structure) with inliers at
    # similarity_min_inliers distinct places or more. Given each photo's true images directly, 48 of 300
    # full-benchmark photos (seed 2) had 4 or more inliers on an insane affine map; a similarity with the
    # structure above 0.3 aligned 13 of them. In the whole pipeline (400 photos, seed 1) the true pin aligned
    # for 0.511 against 0.495
    similarity_fallback: int = 1
    similarity_min_inliers: int = 3
    similarity_min_structure: float = 0.3
    # of the photo's keypoints (strongest first, as kept), how many also have their contrast-inverted codes
    # matched (Features.inverted; separately, each with its own ratio test; 0: none): raised metal lines turn from
    # dark to light between a studio shot and a photo. Given each photo's true images directly, 238 of 300
    # full-benchmark photos (seed 2) aligned against 220 (every twin); in the whole pipeline the true pin came
    # first for 0.610 against 0.567 with 750, 0.600 with every twin, which cost more time (README,
    # "Contrast-inverted matches")
    match_inverted: int = 750
    # an outline alignment (pinid.local.silhouette: the photo's salient region and the reference's silhouette
    # brought into one frame by their moments, no keypoints) is kept where the photo's edges follow the
    # reference's this well (structure_agreement). Given each photo's true images, of the 51 in 150
    # full-benchmark photos (seed 2) whose true pin the pipeline left unaligned, 12 reached 0.5; of the
    # glance's other top finds, 4 % did
    outline_min_structure: float = 0.5

    def __post_init__(self) -> None:
        check(0 < self.ratio_test_max <= 1, "ratio_test_max must be in (0, 1]")
        check(0 < self.ransac_confidence < 1, "ransac_confidence must be in (0, 1)")
        check(self.max_reprojection_share > 0, "max_reprojection_share must be above 0")
        check(self.max_illumination_tint >= 1, "max_illumination_tint must be at least 1")
        check(self.balance_illumination in (0, 1), "balance_illumination must be 0 or 1")
        check(self.similarity_fallback in (0, 1), "similarity_fallback must be 0 or 1")
        check(self.seeded_affine >= 0, "seeded_affine must be at least 0")
        check(self.seed_loose_factor >= 1, "seed_loose_factor must be at least 1")
        check(self.similarity_min_inliers >= 2, "similarity_min_inliers must be at least 2")
        check(-1 <= self.similarity_min_structure <= 1, "similarity_min_structure must be in [-1, 1]")
        check(-1 <= self.outline_min_structure <= 1, "outline_min_structure must be in [-1, 1]")
        check(0 <= self.homography_min_spread <= 1, "homography_min_spread must be in [0, 1]")
        for name in ("min_matches", "min_inliers", "homography_min_inliers", "min_pin_area_px", "match_inverted"):
            check(getattr(self, name) >= 0, f"{name} must be at least 0")
        for name in ("ransac_max_iterations", "distinct_cells_per_side", "max_anisotropy", "max_colour_regions"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1")


@dataclass(frozen=True)
class Verification:
    """How well one reference image explains a photo. ``homography`` maps reference to photo pixels."""

    image_id: int
    matches: int
    inliers: int
    distinct_inliers: int
    homography: np.ndarray | None
    polygon: np.ndarray | None  # (4, 2) pin box corners in photo pixels
    colour_distance: float  # area-weighted Lab distance of enamel regions; nan when not aligned
    query_inliers: np.ndarray  # rows of the photo's features that are inliers
    # how well the aligned photo's edges follow the reference's (structure_agreement); nan when not aligned
    structure: float = float("nan")
    # aligned by the fallback similarity transform (its inliers fit no sane affine map); kept only where the
    # structure agreement confirms it
    similarity_only: bool = False
    # aligned by the pin's outline alone (outline_alignment): no keypoint matched, the structure confirms it
    outline_only: bool = False

    @property
    def inlier_ratio(self) -> float:
        return self.inliers / self.matches if self.matches else 0.0

    @property
    def aligned(self) -> bool:
        return self.homography is not None


def _failed(image_id: int, matches: int = 0) -> Verification:
    return Verification(image_id, matches, 0, 0, None, None, float("nan"), np.zeros(0, np.int64))


def match_all(query: Features, references: list[Features], *, config: VerifyConfig = VerifyConfig()
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ratio-test matches (reference rows, query rows) for each reference, one photo feature used once."""
    import faiss

    if len(query) < 2 or not references:
        return [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in references]
    sizes = [len(r) for r in references]
    if not sum(sizes):
        return [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in references]
    stacked = np.concatenate([r.descriptors for r in references]).astype(np.float32)
    # FAISS's blocked exact search: 3x faster than a full distance matrix and top-k (113 vs 353 ms
    # for 18,750 x 4,000 descriptors on 2 cores)
    squared, which = faiss.knn(stacked, np.ascontiguousarray(query.descriptors, dtype=np.float32), 2,
                               faiss.METRIC_L2)
    best = np.sqrt(np.maximum(squared, 0.0))
    passed = best[:, 0] < config.ratio_test_max * best[:, 1]
    result = []
    start = 0
    for size in sizes:
        rows = np.nonzero(passed[start:start + size])[0]
        query_rows = which[start + rows, 0]
        # one photo feature may be claimed by several reference views: keep the closest
        order = np.argsort(best[start + rows, 0], kind="stable")
        _, first = np.unique(query_rows[order], return_index=True)
        chosen = order[first]
        result.append((rows[chosen].astype(np.int64), query_rows[chosen].astype(np.int64)))
        start += size
    return result


def quick_inliers(query_keypoints: np.ndarray, reference_keypoints: np.ndarray, reference_long_side: float, *,
                  config: VerifyConfig = VerifyConfig(), max_matches: int = 300) -> int:
    """Tentative matches (from the vote) that one similarity transform explains: the cascade's cheap check.

    Full verification matches every reference descriptor against the photo's;
    this reuses the vote's nearest neighbours instead, so hundreds of
    candidates can be screened for the cost of a few full checks. Each match's
    two keypoints (position, size, angle) give one similarity hypothesis
    (Philbin et al. 2007); every hypothesis is tried against every match, with
    twice verification's tolerance (for tilt), and the best one's inliers are
    counted as distinct positions on both sides, as verification counts them.
    """
    query = np.asarray(query_keypoints, dtype=np.float64)[:max_matches]
    reference = np.asarray(reference_keypoints, dtype=np.float64)[:max_matches]
    if len(query) < 3:
        return 0
    inliers, scale = _match_similarities(query, reference, 2 * config.max_reprojection_share * reference_long_side)
    best = int(np.argmax(inliers.sum(axis=1)))
    chosen = inliers[best]
    cell = reference_long_side / config.distinct_cells_per_side
    return min(_distinct(reference[chosen, :2], cell), _distinct(query[chosen, :2], max(2.0, cell / scale[best])))


def _match_similarities(query: np.ndarray, reference: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The similarity (photo -> reference) each match's two keypoints imply: which matches each one brings
    within ``tolerance`` of their reference keypoint ((n, n) booleans, a row per proposal), and its scale."""
    scale = np.maximum(reference[:, 2], 1e-3) / np.maximum(query[:, 2], 1e-3)
    turn = np.deg2rad(reference[:, 3] - query[:, 3])
    cos, sin = scale * np.cos(turn), scale * np.sin(turn)
    # proposal h maps photo point p to R_h p + t_h, with t_h fixed by its own match
    tx = reference[:, 0] - (cos * query[:, 0] - sin * query[:, 1])
    ty = reference[:, 1] - (sin * query[:, 0] + cos * query[:, 1])
    follows = np.zeros((len(query), len(query)), bool)
    for start in range(0, len(query), 256):  # bounded memory for a board's long match lists
        rows = slice(start, start + 256)
        px = cos[rows, None] * query[None, :, 0] - sin[rows, None] * query[None, :, 1] + tx[rows, None]
        py = sin[rows, None] * query[None, :, 0] + cos[rows, None] * query[None, :, 1] + ty[rows, None]
        follows[rows] = (px - reference[None, :, 0]) ** 2 + (py - reference[None, :, 1]) ** 2 < tolerance ** 2
    return follows, scale


def hough_filter(ref_kp: np.ndarray, query_kp: np.ndarray) -> np.ndarray:
    """Keep matches that agree with the most common rotation and scale change (Lowe 2004, section 7).

    Rotation bins are 30 degrees over the full circle (wrapping around),
    scale bins half an octave from -6 to +6 octaves; each bin is counted with
    its eight neighbours, and matches within 45 degrees and one octave of the
    peak bin's centre are kept.
    """
    rotation = (query_kp[:, 3] - ref_kp[:, 3]) % 360.0
    log_scale = np.log2(np.maximum(query_kp[:, 2], 1e-3) / np.maximum(ref_kp[:, 2], 1e-3))
    rotation_bin = np.minimum((rotation // 30.0).astype(np.int64), 11)
    scale_bin = np.floor((log_scale + 6.0) / 0.5).astype(np.int64)
    scale_bin[log_scale == 6.0] = 23  # the last bin includes its right edge
    counted = (scale_bin >= 0) & (scale_bin < 24)
    histogram = np.bincount(rotation_bin[counted] * 24 + scale_bin[counted], minlength=12 * 24).reshape(12, 24)
    # each bin with its neighbours: rotation wraps around, scale does not
    padded = np.pad(np.concatenate([histogram[-1:], histogram, histogram[:1]]), ((0, 0), (1, 1)))
    smoothed = sum(padded[1 + dr:13 + dr, 1 + ds:25 + ds] for dr in (-1, 0, 1) for ds in (-1, 0, 1))
    peak_r, peak_s = np.unravel_index(np.argmax(smoothed), smoothed.shape)
    centre_rotation, centre_scale = (peak_r + 0.5) * 30.0, -6.0 + (peak_s + 0.5) * 0.5
    return ((np.abs((rotation - centre_rotation + 180.0) % 360.0 - 180.0) <= 45.0)
            & (np.abs(log_scale - centre_scale) <= 1.0))


def seeded_affine(query_kp: np.ndarray, ref_kp: np.ndarray, threshold: float, *, loose: float = 5.0,
                  seeds: int = 50) -> tuple[np.ndarray | None, np.ndarray]:
    """The photo -> reference affine map most matches agree on, and which agree (within ``threshold``).

    Each match's two keypoints (place, size, angle) already fix a similarity
    transform, so every match proposes one (Lowe 2004, section 7): no random
    samples. The ``seeds`` proposals that the most matches follow within
    ``loose`` times the threshold are refined: an affine least-squares fit to
    their followers, refitted to those within twice and then once the
    threshold. A pin gives few correct matches among many wrong ones (4 of
    50 is common), where three-point RANSAC must draw about 10,000 samples to
    find them and stops sooner; one proposal per match finds them every time.
    Given the true reference images of 300 full-benchmark photos (seed 2)
    and 15 other images each, 211 photos aligned against 196 with RANSAC,
    and 230 of the 4,500 other images against 510.
    """
    count = len(query_kp)
    if count < 3:
        return None, np.zeros(count, bool)
    query, reference = np.asarray(query_kp, np.float64), np.asarray(ref_kp, np.float64)
    query_xy, ref_xy = query[:, :2], reference[:, :2]
    followers, _ = _match_similarities(query, reference, loose * threshold)
    support = followers.sum(axis=1)
    chosen = np.argsort(-support, kind="stable")[:seeds]
    chosen = chosen[support[chosen] >= 3]  # fewer followers fix no affine map
    if not len(chosen):
        return None, np.zeros(count, bool)
    # proposals of one group of right matches have the same followers: refine each set of followers once
    first_of: dict[bytes, int] = {}
    for seed, packed in zip(chosen.tolist(), np.packbits(followers[chosen], axis=1)):
        first_of.setdefault(packed.tobytes(), seed)
    agree = followers[list(first_of.values())]
    affines = np.full((len(agree), 2, 3), np.nan)
    fitted = np.zeros(len(agree), bool)
    for factor in (2.0, 1.0, 1.0):
        active = agree.sum(axis=1) >= 3  # fewer fix no affine map: that proposal keeps its last fit
        if not active.any():
            break
        affines[active] = _affine_fits(query_xy, ref_xy, agree[active])
        fitted |= active
        residuals = np.einsum("mij,nj->mni", affines[active, :, :2], query_xy) + affines[active, None, :, 2] - ref_xy
        agree[active] = np.sqrt(np.square(residuals).sum(axis=2)) < factor * threshold
    counts = np.where(fitted, agree.sum(axis=1), 0)
    best = int(np.argmax(counts))  # the first of the largest, in the order the proposals were found
    if counts[best] <= 0:
        return None, np.zeros(count, bool)
    return affines[best], agree[best]


def _affine_fits(query_xy: np.ndarray, ref_xy: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Least-squares affine maps (m, 2, 3), photo -> reference, one for each subset (m, n booleans) of the matches.

    All at once by their normal equations, in coordinates centred on each
    subset's mean (well conditioned); a subset whose points lie on a line has
    no single map, and takes ``lstsq``'s smallest one as before.
    """
    weights = subsets.astype(np.float64)
    sizes = weights.sum(axis=1)
    query_mean = weights @ query_xy / sizes[:, None]
    ref_mean = weights @ ref_xy / sizes[:, None]
    centred = query_xy[None] - query_mean[:, None]  # (m, n, 2)
    ref_centred = ref_xy[None] - ref_mean[:, None]
    normal = np.einsum("mn,mni,mnj->mij", weights, centred, centred)
    moments = np.einsum("mn,mni,mnk->mik", weights, centred, ref_centred)
    linear = np.empty((len(subsets), 2, 2))
    scale = np.maximum(np.abs(normal).max(axis=(1, 2)), 1e-12)
    solvable = np.abs(np.linalg.det(normal)) > 1e-9 * scale ** 2
    if solvable.any():
        linear[solvable] = np.linalg.solve(normal[solvable], moments[solvable]).transpose(0, 2, 1)
    for row in np.flatnonzero(~solvable):
        rows = subsets[row]
        solution, *_ = np.linalg.lstsq(np.c_[query_xy[rows], np.ones(int(rows.sum()))], ref_xy[rows], rcond=None)
        linear[row] = solution[:2].T
        ref_mean[row] = solution[2] + linear[row] @ query_mean[row]
    shift = ref_mean - np.einsum("mij,mj->mi", linear, query_mean)
    return np.concatenate([linear, shift[:, :, None]], axis=2)


def _sane(homography: np.ndarray, outline: np.ndarray, photo_area: float, config: VerifyConfig) -> bool:
    import cv2

    try:
        projected = cv2.perspectiveTransform(outline.reshape(-1, 1, 2), homography).reshape(-1, 2)
    except cv2.error:
        return False
    if not np.all(np.isfinite(projected)) or not cv2.isContourConvex(projected.astype(np.float32)):
        return False
    area = cv2.contourArea(projected.astype(np.float32))
    if area < config.min_pin_area_px or area > 4.0 * photo_area:
        return False
    singular = np.linalg.svd(homography[:2, :2] / homography[2, 2], compute_uv=False)
    if singular[1] <= 1e-6 or singular[0] / singular[1] > config.max_anisotropy:
        return False
    # perspective must stay mild across the pin: compare the projected side lengths
    sides = np.linalg.norm(projected - np.roll(projected, 1, axis=0), axis=1)
    return float(sides.max() / max(sides.min(), 1e-6)) < 8.0 * max(1.0, float(np.ptp(outline[:, 0]) /
                                                                          max(np.ptp(outline[:, 1]), 1e-6)))


def _spread(points: np.ndarray, outline: np.ndarray) -> float:
    """The area of the points' convex hull as a share of the outline's (0 for points on a line)."""
    import cv2

    outline_area = cv2.contourArea(outline.astype(np.float32))
    if len(points) < 3 or outline_area <= 0:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))) / outline_area)


def _distinct(points: np.ndarray, cell: float) -> int:
    return len({(int(x // cell), int(y // cell)) for x, y in points})


def verify_geometry(image_id: int, entry: ReferenceEntry, query: Features, ref_rows: np.ndarray,
                    query_rows: np.ndarray, photo_area: float, *, config: VerifyConfig = VerifyConfig()
                    ) -> Verification:
    """Fit and check one reference -> photo homography from ratio-test matches."""
    import cv2

    matches = len(ref_rows)
    if matches < config.min_matches:
        return _failed(image_id, matches)
    ref_kp, query_kp = entry.features.keypoints[ref_rows], query.keypoints[query_rows]
    keep = hough_filter(ref_kp, query_kp)
    if keep.sum() < config.min_matches:
        return _failed(image_id, matches)
    ref_rows, query_rows = ref_rows[keep], query_rows[keep]
    ref_xy = np.ascontiguousarray(ref_kp[keep, :2], dtype=np.float32)
    query_xy = np.ascontiguousarray(query_kp[keep, :2], dtype=np.float32)
    long_side = float(max(entry.features.width, entry.features.height))
    threshold = config.max_reprojection_share * long_side
    # fitted in the reference frame, so that the threshold does not depend on the photo's size
    if config.seeded_affine:
        affine, agree = seeded_affine(query_kp[keep], ref_kp[keep], threshold, loose=config.seed_loose_factor,
                                      seeds=config.seeded_affine)
        mask = agree.astype(np.uint8)
    else:
        affine, mask = cv2.estimateAffine2D(query_xy, ref_xy, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                            maxIters=config.ransac_max_iterations,
                                            confidence=config.ransac_confidence)
    found = None
    if affine is not None and mask is not None and mask.sum() >= config.min_inliers:
        inlier = mask.ravel().astype(bool)
        to_reference = np.vstack([affine, [0.0, 0.0, 1.0]])
        # refine to a full homography on the affine inliers when it keeps (almost) as many, and min_inliers
        if inlier.sum() >= config.homography_min_inliers and _spread(ref_xy[inlier], entry.outline) >= \
                config.homography_min_spread:
            homography, hmask = cv2.findHomography(query_xy[inlier], ref_xy[inlier], cv2.RANSAC, threshold)
            if homography is not None and hmask is not None and \
                    hmask.sum() >= max(0.9 * inlier.sum(), config.min_inliers):
                to_reference = homography
                inlier[np.nonzero(inlier)[0][~hmask.ravel().astype(bool)]] = False
        found = _checked(image_id, entry, to_reference, inlier, ref_xy, query_xy, query_rows, matches, photo_area,
                         config)
    if found is None and config.similarity_fallback:
        # a few inliers bunched on one part of the pin leave an affine map's shear free: it is then far off the
        # pin (insane) though rotation, scale and place were right; a similarity has no shear to get wrong
        similar, mask = cv2.estimateAffinePartial2D(query_xy, ref_xy, method=cv2.RANSAC,
                                                    ransacReprojThreshold=threshold,
                                                    maxIters=config.ransac_max_iterations,
                                                    confidence=config.ransac_confidence)
        if similar is not None and mask is not None and mask.sum() >= config.similarity_min_inliers:
            found = _checked(image_id, entry, np.vstack([similar, [0.0, 0.0, 1.0]]), mask.ravel().astype(bool),
                             ref_xy, query_xy, query_rows, matches, photo_area, config)
            # inliers at two places are any two matches a similarity can join: evidence needs a third
            found = (None if found is None or found.distinct_inliers < config.similarity_min_inliers
                     else replace(found, similarity_only=True))
    return _failed(image_id, matches) if found is None else found


def _checked(image_id: int, entry: ReferenceEntry, to_reference: np.ndarray, inlier: np.ndarray,
             ref_xy: np.ndarray, query_xy: np.ndarray, query_rows: np.ndarray, matches: int, photo_area: float,
             config: VerifyConfig) -> Verification | None:
    """The alignment a photo -> reference map gives, or None when the map is not a plausible view of a pin."""
    import cv2

    try:
        to_photo = np.linalg.inv(to_reference)
    except np.linalg.LinAlgError:
        return None
    outline = entry.outline
    if not _sane(to_photo, outline, photo_area, config):
        return None
    long_side = float(max(entry.features.width, entry.features.height))
    cell = long_side / config.distinct_cells_per_side
    photo_cell = max(2.0, cell * np.sqrt(abs(np.linalg.det(to_photo[:2, :2] / to_photo[2, 2]))))
    distinct = min(_distinct(ref_xy[inlier], cell), _distinct(query_xy[inlier], photo_cell))
    polygon = cv2.perspectiveTransform(outline.reshape(-1, 1, 2), to_photo).reshape(-1, 2)
    return Verification(image_id, matches, int(inlier.sum()), distinct, to_photo, polygon.astype(np.float32),
                        float("nan"), query_rows[inlier])


class LabPyramid:
    """A photo's Lab pixels and their successive halvings, made once per photo (a level on first use).

    The dense checks warp the photo onto a 48-pixel thumbnail; they read the
    level at which the pin spans about 1.5 thumbnails, so that no detail
    aliases, with no per-candidate resize of the photo (that took 0.75 ms a
    candidate, and a photo has some 30 aligned or similarity-only ones).
    """

    def __init__(self, photo_lab: np.ndarray) -> None:
        self.levels = [np.asarray(photo_lab)]

    def level(self, number: int) -> tuple[np.ndarray, int]:
        """The photo halved ``number`` times (Gaussian pyramid), or fewer where it would get too small, and
        how many times it was halved: a level's pixel i is the photo's pixel i * 2 ** halvings."""
        import cv2

        while len(self.levels) <= number and min(self.levels[-1].shape[:2]) >= 2 * _MIN_LEVEL_SIDE:
            self.levels.append(cv2.pyrDown(self.levels[-1]))
        halvings = min(number, len(self.levels) - 1)
        return self.levels[halvings], halvings


_MIN_LEVEL_SIDE = 8  # pixels: the pyramid stops halving before a level this small


def _as_pyramid(photo: "np.ndarray | LabPyramid") -> LabPyramid:
    return photo if isinstance(photo, LabPyramid) else LabPyramid(photo)


def aligned_thumbnail(entry: ReferenceEntry, photo: "np.ndarray | LabPyramid", homography: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The photo (Lab pixels, or their ``LabPyramid``) warped onto the reference's (T, T) thumbnail by
    ``homography`` (reference to photo pixels), and the mask of thumbnail pixels the photo covers: what the
    dense checks compare."""
    import cv2

    pyramid = _as_pyramid(photo)
    side = THUMBNAIL_SIDE
    to_photo = homography @ _thumbnail_to_reference(entry)
    corners = cv2.perspectiveTransform(np.float32([[0, 0], [side, 0], [side, side], [0, side]]).reshape(-1, 1, 2),
                                       to_photo).reshape(-1, 2)
    span = np.sqrt(max(cv2.contourArea(corners), 1.0))
    # the level where the pin spans 1.5 to 3 thumbnails; pyrDown keeps pixel 2i of the level above as pixel i
    number = max(0, int(np.floor(np.log2(span / (1.5 * side))))) if np.isfinite(span) else 0
    image, halvings = pyramid.level(number)
    to_level = np.diag([0.5 ** halvings, 0.5 ** halvings, 1.0]) @ to_photo
    warped = cv2.warpPerspective(image, to_level, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    valid = cv2.warpPerspective(np.full(image.shape[:2], 255, np.uint8), to_level, (side, side),
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    return warped, valid


def colour_distance(entry: ReferenceEntry, photo_lab: "np.ndarray | LabPyramid", homography: np.ndarray, *,
                    config: VerifyConfig = VerifyConfig()) -> float:
    """Area-weighted distance between the reference's enamel regions and the aligned photo, in Lab units.

    Regions are the reference thumbnail's main colours (k-means); each is
    compared by the median of the photo pixels that land on it, so small
    misalignments at region edges do not count. The light's brightness and
    tint are taken out first (``balance_illumination``): exposure alone moved
    a true pin's colours as far as another colourway's. Lightness still counts
    half: shading moves it more than it moves hue.
    """
    return _colour_distance(entry, *aligned_thumbnail(entry, photo_lab, homography), config)


def _colour_distance(entry: ReferenceEntry, warped: np.ndarray, valid: np.ndarray, config: VerifyConfig) -> float:
    inside = (entry.colour[:, :, 3] == INSIDE_ALPHA) & valid
    if inside.sum() < 16:
        return float("nan")
    reference = entry.colour[:, :, :3][inside].astype(np.float32)
    photo = warped[inside].astype(np.float32)
    labels = colour_regions(reference, config.max_colour_regions)
    members = [labels == region for region in np.unique(labels)]
    areas = np.array([member.sum() for member in members], np.float64)
    reference_medians = np.array([np.median(reference[member], axis=0) for member in members])
    photo_medians = np.array([np.median(photo[member], axis=0) for member in members])
    if config.balance_illumination:
        photo_medians = balance_illumination(photo_medians, reference_medians, areas,
                                             max_tint=config.max_illumination_tint)
    weight = np.array([0.5, 1.0, 1.0])
    distances = np.linalg.norm((photo_medians - reference_medians) * weight, axis=1)
    return float((distances * areas).sum() / areas.sum())


def structure_agreement(entry: ReferenceEntry, warped: np.ndarray, valid: np.ndarray) -> float:
    """How well the aligned photo's edges follow the reference's: the cosine, over the thumbnail, of the two
    gradient-orientation fields with the sign of each gradient dropped (-1..1, about 0 for unrelated images).

    A chance alignment is a homography that a few look-alike keypoints
    happen to agree on; it puts the reference's outline and enamel borders
    where the photo has none. A true one, however few its inliers, lines up
    every border of the pin. Orientation is taken modulo 180 degrees (angle
    doubled), because raised metal lines turn from dark to light between a
    studio shot and a photo; each pixel counts by its gradient's strength.
    Among 5,860 aligned candidates of 600 full-benchmark photos it told true
    from chance alignments with AUROC 0.94 (0.90 among those of 8 inliers or
    fewer; README, "How an answer is made", step 4).
    """
    import cv2

    usable = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # warp edges are no pin edges
    if usable.sum() < 64:
        return float("nan")
    reference = _orientation_field(entry.colour[:, :, 0])
    photo = _orientation_field(warped[:, :, 0])
    agree = (reference[0] * photo[0] + reference[1] * photo[1])[usable].sum()
    strength = np.sqrt((np.square(reference).sum(axis=0)[usable].sum()) * (np.square(photo).sum(axis=0)[usable].sum()))
    return float(agree / strength) if strength > 1e-6 else float("nan")


def _orientation_field(lightness: np.ndarray) -> np.ndarray:
    """(2, T, T): each pixel's gradient as a doubled-angle vector whose length is the gradient's."""
    import cv2

    smooth = cv2.GaussianBlur(lightness.astype(np.float32), (0, 0), 0.8)
    dx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0)
    dy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    length = np.sqrt(dx * dx + dy * dy) + 1e-6
    return np.stack([(dx * dx - dy * dy) / length, 2.0 * dx * dy / length])


def with_dense_checks(result: Verification, entry: ReferenceEntry, photo_lab: "np.ndarray | LabPyramid", *,
                      colour: bool = True,
                      config: VerifyConfig = VerifyConfig()) -> Verification:
    """An alignment with its colour distance (when ``colour``) and structure agreement; a similarity-only
    alignment that the photo's edges do not confirm (``similarity_min_structure``) becomes a failed one."""
    if result.homography is None or not (colour or result.similarity_only):
        return result
    warped, valid = aligned_thumbnail(entry, photo_lab, result.homography)
    structure = structure_agreement(entry, warped, valid)
    # (most similarity-only alignments are chance ones: they end here, before the dearer colour comparison)
    if result.similarity_only and not structure >= config.similarity_min_structure:  # nan (nothing to compare): no
        return _failed(result.image_id, result.matches)
    distance = _colour_distance(entry, warped, valid, config) if colour else float("nan")
    return replace(result, colour_distance=distance, structure=structure)


def outline_alignment(image_id: int, entry: ReferenceEntry, photo: Silhouette, photo_lab: "np.ndarray | LabPyramid",
                      photo_area: float, *, colour: bool = True, config: VerifyConfig = VerifyConfig()
                      ) -> Verification | None:
    """The alignment of a reference whose outline matches the photo's salient region (``photo``, in photo
    pixels), or None where no map the outlines propose is sane and confirmed by the photo's edges.

    For pins that give SIFT nothing to match: each of the few maps
    ``outline_maps`` proposes (the two best turns, as taken or mirrored) is checked
    for sanity and its structure agreement (0.1 ms each); the best, if at
    least ``outline_min_structure``, is an alignment with no inliers.
    """
    reference = silhouette(entry.colour[:, :, 3] > 0, _thumbnail_to_reference(entry))
    if reference is None:
        return None
    best: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
    for _, homography in outline_maps(photo, reference)[:_OUTLINE_MAPS]:
        if not _sane(homography, entry.outline, photo_area, config):
            continue
        warped, valid = aligned_thumbnail(entry, photo_lab, homography)
        structure = structure_agreement(entry, warped, valid)
        if structure >= config.outline_min_structure and (best is None or structure > best[0]):
            best = (structure, homography, warped, valid)
    if best is None:
        return None
    import cv2

    structure, homography, warped, valid = best
    polygon = cv2.perspectiveTransform(entry.outline.reshape(-1, 1, 2), homography).reshape(-1, 2)
    distance = _colour_distance(entry, warped, valid, config) if colour else float("nan")
    return Verification(image_id, 0, 0, 0, homography, polygon.astype(np.float32), distance,
                        np.zeros(0, np.int64), structure, outline_only=True)


_OUTLINE_MAPS = 2  # of the best turns (as taken and mirrored), how many are checked: given the true images of 100
# full-benchmark photos, 24 of 25 confirmed ones were among the first two


def _thumbnail_to_reference(entry: ReferenceEntry) -> np.ndarray:
    """Thumbnail pixel (column, row) -> reference pixels (3 x 3): pixel u covers [x0 + u*sx, x0 + (u+1)*sx)."""
    side = THUMBNAIL_SIDE
    x0, y0, x1, y1 = entry.pin_box
    sx, sy = (x1 - x0) / side, (y1 - y0) / side
    return np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5], [0, 0, 1]])


def dense_checks(entry: ReferenceEntry, photo_lab: "np.ndarray | LabPyramid", homography: np.ndarray, *,
                 config: VerifyConfig = VerifyConfig()) -> tuple[float, float]:
    """An alignment's colour distance and structure agreement, from one warp of the photo."""
    warped, valid = aligned_thumbnail(entry, photo_lab, homography)
    return _colour_distance(entry, warped, valid, config), structure_agreement(entry, warped, valid)


def _lab_to_linear_rgb(lab: np.ndarray) -> np.ndarray:
    import cv2

    rgb = cv2.cvtColor(np.clip(np.round(lab), 0, 255).astype(np.uint8).reshape(1, -1, 3), cv2.COLOR_LAB2RGB)
    return (rgb.reshape(-1, 3).astype(np.float64) / 255.0) ** 2.2


def _linear_rgb_to_lab(linear: np.ndarray) -> np.ndarray:
    import cv2

    rgb = np.clip(np.round(np.clip(linear, 0.0, 1.0) ** (1 / 2.2) * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb.reshape(1, -1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)


def balance_illumination(photo: np.ndarray, reference: np.ndarray, areas: np.ndarray, *, max_tint: float
                         ) -> np.ndarray:
    """The photo's region colours (OpenCV 8-bit Lab) with the light's brightness and tint taken out.

    A camera sees a pin's colours through the light's colour and the
    exposure: one gain per linear RGB channel for the whole pin (von Kries).
    The gains are the area-weighted median ratios of photo to reference over
    the regions, so one region that truly differs (another colourway) cannot
    pull them; the tint (a channel's gain over the mean gain) is limited to
    ``max_tint`` either way, so that no light can turn one hue into another.
    """
    photo_linear, reference_linear = _lab_to_linear_rgb(photo), _lab_to_linear_rgb(reference)
    log_ratio = np.log(np.maximum(photo_linear, 1e-3)) - np.log(np.maximum(reference_linear, 1e-3))
    gains = np.array([_weighted_median(log_ratio[:, channel], areas) for channel in range(3)])
    brightness = float(np.clip(gains.mean(), np.log(0.25), np.log(4.0)))
    tint = np.clip(gains - gains.mean(), -np.log(max_tint), np.log(max_tint))
    return _linear_rgb_to_lab(photo_linear / np.exp(brightness + tint))


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def colour_regions(pixels: np.ndarray, most: int) -> np.ndarray:
    """A region label for each Lab pixel (n, 3) float32: k-means into at most ``most`` main colours
    (fewer when the pixels have fewer distinct colours), seeded so that one input gives one answer."""
    import cv2

    regions = min(most, _distinct_colours(pixels))
    if regions <= 1:
        return np.zeros(len(pixels), np.int32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    cv2.setRNGSeed(0)
    _, labels, _ = cv2.kmeans(pixels, regions, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    return labels.ravel()


def _distinct_colours(pixels: np.ndarray) -> int:
    """How many distinct colours (each channel in steps of 8) the pixels hold: as one integer per pixel, which
    ``np.unique`` counts many times faster than rows."""
    steps = pixels.astype(np.int64) // 8
    steps -= steps.min(axis=0, initial=0)
    sizes = steps.max(axis=0, initial=0) + 1
    return len(np.unique((steps[:, 0] * sizes[1] + steps[:, 1]) * sizes[2] + steps[:, 2]))


def _match_with_twins(query: Features, twins: Features | None, references: list[Features],
                      config: VerifyConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """``match_all`` of the photo's keypoints and, separately, of their inverted twins (rows after the photo's)."""
    matched = match_all(query, references, config=config)
    if twins is None:
        return matched
    count = len(query)
    return [(np.r_[ref_rows, twin_ref_rows], np.r_[query_rows, twin_query_rows + count])
            for (ref_rows, query_rows), (twin_ref_rows, twin_query_rows)
            in zip(matched, match_all(twins, references, config=config))]


def _matched_ahead(query: Features, twins: Features | None, references: list[Features], config: VerifyConfig,
                   chunk: int = _MATCH_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each reference's matches, in order, matched a chunk ahead on a worker thread.

    The exact search leaves Python's lock; the geometry after it is Python,
    on one core. So the next chunk is searched while the last one's geometry
    is checked. The worker keeps FAISS's own thread count: held to all cores
    but one it was slower (paired on 100 benchmark photos, 2 cores: 0.93 of
    the serial time per photo against 0.96). A reference's matches do not
    depend on the others', so they are the same as from one search of all.
    """
    if len(references) <= chunk:
        yield from _match_with_twins(query, twins, references, config)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pinid-match") as pool:
        pending = [pool.submit(_match_with_twins, query, twins, references[start:start + chunk], config)
                   for start in range(0, len(references), chunk)]
        try:
            for done in pending:
                yield from done.result()
        finally:
            for waiting in pending:
                waiting.cancel()


def verify(query: Features, photo_lab: np.ndarray, candidates: list[tuple[int, ReferenceEntry]],
           *, colour: bool = True, config: VerifyConfig = VerifyConfig()) -> list[Verification]:
    """Verify every candidate (image id, entry) against one photo, in the candidates' order.

    Where the photo has inverted codes, the first ``match_inverted`` keypoints'
    inverted twins (their angles turned half round) are matched too, separately,
    so that the twins never stand in each other's ratio test; inliers still
    name the photo's own rows.
    """
    photo_area = float(query.width * query.height)
    pyramid = _as_pyramid(photo_lab)  # one per photo, for every candidate's dense checks
    references = [entry.features for _, entry in candidates]
    count = len(query)
    inverted = 0 if query.inverted is None else min(config.match_inverted, count)
    twins = None
    if inverted:
        turned = query.keypoints[:inverted].copy()
        turned[:, 3] = (turned[:, 3] + 180.0) % 360.0
        twins = Features(turned, query.inverted[:inverted], query.width, query.height)
    matched = _matched_ahead(query, twins, references, config)
    if twins is not None:
        query = Features(np.concatenate([query.keypoints, twins.keypoints]),
                         np.concatenate([query.descriptors, twins.descriptors]), query.width, query.height)
    results = []
    for (image_id, entry), (ref_rows, query_rows) in zip(candidates, matched):
        result = verify_geometry(image_id, entry, query, ref_rows, query_rows, photo_area, config=config)
        if len(query) > count:  # a twin's row is its keypoint's
            result = replace(result, query_inliers=np.unique(result.query_inliers % count))
        results.append(with_dense_checks(result, entry, pyramid, colour=colour, config=config))
    return results


__all__ = ["Verification", "VerifyConfig", "verify", "match_all", "verify_geometry", "seeded_affine",
           "colour_distance", "aligned_thumbnail", "structure_agreement", "dense_checks", "with_dense_checks",
           "LabPyramid", "quick_inliers", "hough_filter", "colour_regions", "outline_alignment"]
