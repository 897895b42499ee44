"""Is this the same photograph? Geometric confirmation of photo-hash matches.

A 64-bit photo hash sees the layout of a picture, not the small pin in it:
two sellers' photos of different pins on the same kind of desk hash within a
few bits of each other (on the full benchmark, hash-only grouping had pairwise
precision 0.67). A re-upload is the same photograph resized and cropped, which
is a similarity transform, so it keeps many ORB features consistent with one
similarity; two different photographs keep a handful. On the full benchmark's
547 hash-matched pairs (generator 1.1), 16 inliers keeps 434 of 438 true
re-upload pairs and lets 4 of 109 different-photo pairs through.

ORB features turn with the photo (RANSAC fits the rotation too), but a
mirrored photo is not a similarity of the original: its features are also
taken from the photo flipped left-right, and a pair is the same photo when
either orientation lines up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Hashable

import numpy as np

from ..errors import ImageError
from ..images import load_image

SIDE = 320  # both photos are compared at this long side (small ones enlarged)
MIN_INLIERS = 16
_REPROJECTION_PX = 3.0
#: FAST thresholds tried in turn until a photo gives ``_ENOUGH_KEYPOINTS``: a blurry or flat photo
#: has few corners at ORB's default (20), and a copy cropped back after a turn enlarges its blur.
#: On 60 generated listing photos turned by 30-200 degrees and cropped back, 20 alone confirmed
#: 80-87% per angle, 20/10/5 85-93%, and the same different-photo pairs got through (6 of 517
#: hash matches among 603 listings).
_FAST_THRESHOLDS = (20, 10, 5)
_ENOUGH_KEYPOINTS = 100


@dataclass(frozen=True)
class PhotoFeatures:
    points: np.ndarray  # (n, 2) float32, in the SIDE-pixel frame
    descriptors: np.ndarray | None  # (n, 32) uint8 ORB
    #: the same photo flipped left-right (points in the flipped frame), for mirrored re-uploads
    mirrored: PhotoFeatures | None = None


def photo_features(path: str | Path) -> PhotoFeatures | None:
    """ORB features of a photo at a fixed size, as it is and mirrored; None if it cannot be read."""
    try:
        image = load_image(path, min_side=SIDE)
    except ImageError:
        return None
    scale = SIDE / max(image.size)
    grey = np.asarray(image.convert("L").resize((max(1, round(image.width * scale)),
                                                  max(1, round(image.height * scale)))))
    return replace(_orb(grey), mirrored=_orb(np.ascontiguousarray(grey[:, ::-1])))


def _orb(grey: np.ndarray) -> PhotoFeatures:
    import cv2

    for threshold in _FAST_THRESHOLDS:
        keypoints, descriptors = cv2.ORB_create(nfeatures=500, fastThreshold=threshold).detectAndCompute(grey, None)
        if len(keypoints) >= _ENOUGH_KEYPOINTS:
            break
    return PhotoFeatures(np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors)


def similarity_inliers(a: PhotoFeatures, b: PhotoFeatures) -> int:
    """Cross-checked ORB matches consistent with one similarity transform (RANSAC)."""
    import cv2

    if a.descriptors is None or b.descriptors is None:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a.descriptors, b.descriptors)
    if len(matches) < 3:
        return 0
    source = a.points[[m.queryIdx for m in matches]]
    target = b.points[[m.trainIdx for m in matches]]
    transform, mask = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                                  ransacReprojThreshold=_REPROJECTION_PX)
    return 0 if transform is None or mask is None else int(mask.sum())


def same_photo(a: PhotoFeatures, b: PhotoFeatures, min_inliers: int = MIN_INLIERS) -> bool:
    """At least ``min_inliers`` under one similarity with ``b`` as it is; or mirrored: ``b``
    flipped lines up with ``a``, and ``a`` flipped with ``b``, each with ``min_inliers`` more
    than the photos as shot.

    What lines up by chance (a felt desk, a symmetric pin) lines up about as
    well either way, so the photos as shot are the mirror's baseline; and
    flipping each photo in turn (new keypoints each time) makes two
    measurements, which a chance alignment rarely passes twice. On the full
    benchmark's 2,103 hash-matched pairs of different photos, the mirror
    accepted none that the photo as shot did not (16 mirrored inliers alone: 4;
    one flip with the baseline: 1), and kept 300 of 300 mirrored copies of the
    originals and 296 of 300 mirrored and turned ones.
    """
    plain = similarity_inliers(a, b)
    if plain >= min_inliers:
        return True
    if a.mirrored is None or b.mirrored is None or similarity_inliers(a, b.mirrored) < plain + min_inliers:
        return False
    return similarity_inliers(b, a.mirrored) >= similarity_inliers(b, a) + min_inliers


class PhotoConfirmer:
    """Confirms 'same photo' for pairs of files, caching features per key (e.g. content row or path)."""

    def __init__(self, min_inliers: int = MIN_INLIERS) -> None:
        self.min_inliers = min_inliers
        self._features: dict[Hashable, PhotoFeatures | None] = {}
        self._verdicts: dict[frozenset, bool] = {}

    def __call__(self, key_a: Hashable, path_a: Path, key_b: Hashable, path_b: Path) -> bool:
        pair = frozenset((key_a, key_b))
        if pair not in self._verdicts:
            a, b = self._feature(key_a, path_a), self._feature(key_b, path_b)
            self._verdicts[pair] = a is not None and b is not None and same_photo(a, b, self.min_inliers)
        return self._verdicts[pair]

    def _feature(self, key: Hashable, path: Path) -> PhotoFeatures | None:
        if key not in self._features:
            self._features[key] = photo_features(path)
        return self._features[key]
