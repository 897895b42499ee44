"""From a photo to verified, ranked, calibrated answers: single pins and whole boards.

An answer is made here and only here. Candidates come from the local-feature
vote and, when the index has an encoder, from CLIP (the caller passes the
photo's CLIP top list); the two lists are merged (alternating, best first)
and the first ``candidates`` reference images are verified
(:mod:`pinid.local.verify`). The calibrated ranking model orders them and the
confidence model says how sure the best answer is
(:mod:`pinid.identify.confidence`); the result is an ``Identification``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..images import working_copy
from ..local.features import BOARD_SIDE, QUERY_SIDE, query_features
from ..local.store import LocalStore
from ..local.verify import Verification, colour_distance, verify
from ..local.vote import vote
from ..results import Found, Identification, Match
from .confidence import Calibration, ranking_features, sigmoid
from .pin_table import PinTable

DEFAULT_CANDIDATES = 50
_BOARD_CANDIDATES = 80
_COLOURWAY_SOURCES = 3  # aligned candidates whose colourways are checked too
_OVERLAP = 0.3  # polygons overlapping more than this (intersection over the smaller) are one pin


@dataclass(frozen=True)
class Candidate:
    """One verified reference image, with everything the models and a report need."""

    image_id: int
    pin_row: int
    design: str
    clip_score: float
    votes: float
    verification: Verification
    rank_score: float

    @property
    def aligned(self) -> bool:
        return self.verification.aligned


class Recogniser:
    """Verification and calibration over one index's local store and pin table (made by ``PinIndex``)."""

    def __init__(self, store: LocalStore, vocabulary: Any, table: PinTable, calibration: Calibration) -> None:
        self.store = store
        self.vocabulary = vocabulary
        self.table = table
        self.image_pin_rows = dict(zip(table.image_ids.tolist(), table.image_pin_rows.tolist()))
        self.designs = {pin_row: pin.design for pin_row, pin in table.pins.items()}
        self.calibration = calibration
        self.design_images: dict[str, list[int]] = {}
        for image_id, pin_row in self.image_pin_rows.items():
            self.design_images.setdefault(self.designs[pin_row], []).append(image_id)

    def candidates(self, image: Image.Image, clip: Sequence[tuple[int, float]] = (), *,
                   limit: int = DEFAULT_CANDIDATES, board: bool = False) -> tuple[list[Candidate], float]:
        """Verified candidates for a photo, best first, and the factor back to the photo's pixels.

        ``clip`` lists (image id, cosine) from the CLIP search, best first.
        """
        import cv2

        work, back = working_copy(image, BOARD_SIDE if board else QUERY_SIDE)
        features = query_features(work, board=board)
        voted_ids, vote_totals = vote(self.vocabulary, self.store.row_image, features.descriptors,
                                      features.keypoints, self.store.keypoints)
        votes = dict(zip(voted_ids.tolist(), vote_totals.tolist()))
        clip_scores = dict(clip)
        order: list[int] = []
        for pair in _interleave([image_id for image_id, _ in clip], voted_ids.tolist()):
            if pair not in order and pair in self.store:
                order.append(pair)
            if len(order) == limit:
                break
        lab = cv2.cvtColor(np.asarray(work), cv2.COLOR_RGB2LAB)
        checked = verify(features, lab, [(image_id, self.store.entry(image_id)) for image_id in order])
        checked = self._with_colourways(checked, lab)
        order += [v.image_id for v in checked[len(order):]]
        scores = self.calibration.rank_score(ranking_features(
            [v.distinct_inliers for v in checked], [v.inlier_ratio for v in checked],
            [v.colour_distance for v in checked], [clip_scores.get(v.image_id, 0.0) for v in checked],
            [v.aligned for v in checked]))
        result = [Candidate(v.image_id, self.image_pin_rows[v.image_id], self.designs[self.image_pin_rows[v.image_id]],
                            clip_scores.get(v.image_id, float("nan")), votes.get(v.image_id, 0.0), v, float(s))
                  for v, s in zip(checked, scores)]
        position = {image_id: i for i, image_id in enumerate(order)}
        result.sort(key=lambda c: (-c.rank_score, position[c.image_id]))
        return result, back

    def _with_colourways(self, checked: list[Verification], lab: np.ndarray) -> list[Verification]:
        """Give every colourway of an aligned design the same alignment, and its own colour distance.

        Colourways of a design share their shape, but a recoloured pin can show
        different grey-level contrast and fail geometric verification on its
        own, or miss the candidate list. On the benchmark, every colourway
        query whose design was found but whose variant was not had its true
        variant unaligned. The aligned sibling's homography is carried over
        (through the two pin boxes, in case the shots are framed differently)
        and only the colour comparison decides.
        """
        by_image = {v.image_id: v for v in checked}
        aligned = sorted((v for v in checked if v.aligned), key=lambda v: -v.distinct_inliers)
        extra: list[Verification] = []
        for source in aligned[:_COLOURWAY_SOURCES]:
            design = self.designs[self.image_pin_rows[source.image_id]]
            source_box = self.store.entry(source.image_id).pin_box
            for sibling in self.design_images.get(design, ()):
                current = by_image.get(sibling)
                if current is not None and current.aligned:
                    continue
                entry = self.store.entry(sibling)
                homography = source.homography @ _box_to_box(entry.pin_box, source_box)
                borrowed = Verification(sibling, source.matches, source.inliers, source.distinct_inliers, homography,
                                        source.polygon, colour_distance(entry, lab, homography),
                                        source.query_inliers)
                by_image[sibling] = borrowed
                if current is None:
                    extra.append(borrowed)
        return [by_image[v.image_id] for v in checked] + extra

    def identify(self, image: Image.Image, clip: Sequence[tuple[int, float]] = (), *, k: int = 5,
                 limit: int = DEFAULT_CANDIDATES, query: str = "<image>") -> Identification:
        """The answer for one decoded photo: the top ``k`` pins and one calibrated confidence."""
        ranked, back = self.candidates(image, clip, limit=limit)
        confidence = self.confidence(ranked)
        return Identification(query, self.matches(ranked, k, back), None, confidence,
                              confidence < self.calibration.threshold)

    def matches(self, ranked: Sequence[Candidate], k: int, back: float = 1.0) -> list[Match]:
        """Ranked candidates as pins (each pin once, at its best image), polygons in photo pixels."""
        matches: list[Match] = []
        seen: set[int] = set()
        for candidate in ranked:
            if candidate.pin_row in seen:
                continue
            seen.add(candidate.pin_row)
            pin = self.table.pins[candidate.pin_row]
            check = candidate.verification
            polygon = None if check.polygon is None else np.round(check.polygon * back, 1).tolist()
            similarity = None if np.isnan(candidate.clip_score) else candidate.clip_score
            matches.append(Match(len(matches) + 1, pin.pin_id, pin.name, pin.metadata,
                                 self.table.image_paths[candidate.image_id], similarity,
                                 sigmoid(candidate.rank_score), check.distinct_inliers,
                                 check.colour_distance if check.aligned else None, polygon))
            if len(matches) == k:
                break
        return matches

    def confidence(self, ranked: Sequence[Candidate]) -> float:
        """How sure the best candidate is: its score and its lead over the best rival of another design."""
        if not ranked or not ranked[0].aligned:
            return 0.0
        top = ranked[0]
        rival = next((c.rank_score for c in ranked[1:] if c.design != top.design and c.aligned), None)
        lead = top.rank_score - (rival if rival is not None else self.calibration.ranking[0])
        return self.calibration.answer_confidence(top.rank_score, lead)

    def find_all(self, image: Image.Image, *, limit: int = _BOARD_CANDIDATES, min_confidence: float | None = None
                 ) -> list[Found]:
        """Every pin verified in a board photo, with its confidence and polygon in photo pixels.

        Candidates are taken best first; one whose outline mostly overlaps an
        accepted pin is the same pin (or a colourway sibling) and is dropped.
        The confidence of each uses as rivals only candidates that overlap it.
        """
        threshold = self.calibration.threshold if min_confidence is None else min_confidence
        ranked, back = self.candidates(image, limit=limit, board=True)
        aligned = [c for c in ranked if c.aligned]
        accepted: list[tuple[Candidate, float, np.ndarray]] = []
        for candidate in aligned:
            polygon = candidate.verification.polygon * back
            if any(_overlap(polygon, other) > _OVERLAP for _, _, other in accepted):
                continue
            rivals = [c for c in aligned if c is not candidate
                      and _overlap(polygon, c.verification.polygon * back) > _OVERLAP]
            confidence = self.confidence([candidate, *rivals])
            if confidence >= threshold and confidence > 0:
                accepted.append((candidate, confidence, polygon))
        return [Found(self.matches([candidate], 1, back)[0], confidence, polygon)
                for candidate, confidence, polygon in accepted]


def _box_to_box(source: tuple[float, float, float, float], target: tuple[float, float, float, float]) -> np.ndarray:
    """The scale-and-shift map taking one pin box onto another (3 x 3)."""
    sx = (target[2] - target[0]) / max(source[2] - source[0], 1e-6)
    sy = (target[3] - target[1]) / max(source[3] - source[1], 1e-6)
    return np.array([[sx, 0.0, target[0] - sx * source[0]], [0.0, sy, target[1] - sy * source[1]], [0.0, 0.0, 1.0]])


def _interleave(first: Sequence[int], second: Sequence[int]) -> list[int]:
    merged = []
    for i in range(max(len(first), len(second))):
        merged.extend(seq[i] for seq in (first, second) if i < len(seq))
    return merged


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller area of two convex polygons."""
    import cv2

    area, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    smaller = min(cv2.contourArea(a.astype(np.float32)), cv2.contourArea(b.astype(np.float32)))
    return float(area / smaller) if smaller > 0 else 0.0
