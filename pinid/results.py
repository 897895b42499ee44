"""The answer types: what identification, search and builds return.

They sit below the index and the recogniser so that both can use them
without importing each other. Every type has ``to_dict`` for JSON output;
non-finite numbers become ``null`` so the JSON stays valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


#: The one progress-callback shape: ``(stage, done, total)``, called as work advances. ``stage`` names
#: what is being counted ("encoding", "local features", "identifying", "neighbours", ...); ``done`` only
#: grows within a stage, and a new stage starts a new count.
Progress = Callable[[str, int, int], None]


def counting(on_progress: Progress | None, stage: str, total: int) -> Callable[[int], None]:
    """Adapt a per-item ``(step)`` callback (the encoder's) to ``Progress`` for one stage."""
    done = 0

    def advance(step: int) -> None:
        nonlocal done
        done += step
        if on_progress is not None:
            on_progress(stage, done, total)

    return advance


def finite_or_none(value: float | None, digits: int) -> float | None:
    """A number for JSON: rounded, or ``None`` for missing, NaN and infinity (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


@dataclass(frozen=True)
class Match:
    """One candidate pin for a photo.

    ``similarity`` is the CLIP cosine of the pin's best reference image to the
    photo (``None`` where the index has no CLIP vectors or CLIP did not list
    it); ``probability`` is the calibrated probability that this candidate is
    the pin in the photo (``None`` where no verification ran). The
    verification fields are ``None`` where no verification ran.
    """

    rank: int
    pin_id: str
    name: str
    metadata: dict[str, Any]
    reference_image: str
    similarity: float | None = None
    probability: float | None = None
    inliers: int | None = None  # geometrically consistent matches at distinct places
    colour_distance: float | None = None  # Lab distance of the aligned enamel regions
    polygon: list[list[float]] | None = None  # the pin's outline in the photo, when aligned

    @property
    def score(self) -> float:
        """What orders the list: the probability when verified, else the cosine similarity."""
        if self.probability is not None:
            return self.probability
        return self.similarity if self.similarity is not None else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON fields: ``score`` (as :attr:`score`), ``similarity``, ``probability``, and the rest."""
        result: dict[str, Any] = {"rank": self.rank, "pin_id": self.pin_id, "name": self.name,
                                  "score": finite_or_none(self.score, 6),
                                  "similarity": finite_or_none(self.similarity, 6),
                                  "probability": finite_or_none(self.probability, 6),
                                  "metadata": self.metadata, "reference_image": self.reference_image}
        if self.inliers is not None:
            result["inliers"] = self.inliers
            result["colour_distance"] = finite_or_none(self.colour_distance, 2)
            result["polygon"] = None if self.polygon is None else [[round(float(x), 1), round(float(y), 1)]
                                                                   for x, y in self.polygon]
        return result


@dataclass(frozen=True)
class Identification:
    """The answer for one query: ranked matches, or the reason the photo could not be read.

    ``confidence`` is the calibrated probability that the first match is right
    (``None`` when only CLIP similarity was used); ``unknown`` says that it is
    under the index's threshold: the pin is probably not in the catalogue, and
    ``matches`` are only the nearest candidates.
    """

    query: str
    matches: list[Match]
    error: str | None = None
    confidence: float | None = None
    unknown: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "error": self.error, "confidence": finite_or_none(self.confidence, 4),
                "unknown": self.unknown, "matches": [m.to_dict() for m in self.matches]}


@dataclass(frozen=True)
class Found:
    """A pin found in a board photo: which, how sure, and where (polygon in photo pixels)."""

    match: Match
    confidence: float
    polygon: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {**self.match.to_dict(), "confidence": finite_or_none(self.confidence, 4),
                "polygon": np.round(self.polygon, 1).tolist()}


@dataclass(frozen=True)
class BuildReport:
    """What a build did, for the summary a user reads."""

    pins: int
    images: int
    skipped: list[tuple[str, str]]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0
