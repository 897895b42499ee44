"""One calibrated confidence per answer, and the line under which the answer is "unknown pin".

Two small logistic models, fitted on benchmark data (``scripts/fit_calibration.py``):

* **ranking** scores each verified candidate from its geometry and colour
  (distinct inliers, inlier ratio, colour distance, CLIP similarity);
* **confidence** turns the best candidate's ranking score and its lead over
  the runner-up *of another design* into the probability that the answer is
  right. A colourway sibling does not count as a rival for the lead: it shares
  every keypoint, and the colour term in the ranking already separates them.

The fitted coefficients ship with the package (``calibration.json``) and are
copied into each index's manifest at build time, so an index keeps answering
the same way after pinid is upgraded. JSON only, no pickle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import numpy as np

from ..errors import IndexFormatError

CALIBRATION_VERSION = 1
RANKING_FEATURES = ("log_distinct_inliers", "inlier_ratio", "colour_distance", "clip_score")
CONFIDENCE_FEATURES = ("top_score", "lead")
_COLOUR_CAP = 60.0  # Lab units; unaligned candidates count as this far off
_UNALIGNED = -12.0  # ranking score of a candidate without a homography


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients; an answer whose confidence is under ``unknown_below`` is "unknown pin"."""

    ranking: tuple[float, ...]  # bias, then one weight per RANKING_FEATURES
    confidence: tuple[float, ...]  # bias, then one weight per CONFIDENCE_FEATURES
    unknown_below: float
    fitted_on: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": CALIBRATION_VERSION, "ranking_features": list(RANKING_FEATURES),
                "ranking": list(self.ranking), "confidence_features": list(CONFIDENCE_FEATURES),
                "confidence": list(self.confidence), "unknown_below": self.unknown_below,
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        try:
            if data["version"] != CALIBRATION_VERSION:
                raise ValueError(f"version {data['version']}")
            ranking = tuple(float(v) for v in data["ranking"])
            confidence = tuple(float(v) for v in data["confidence"])
            if len(ranking) != len(RANKING_FEATURES) + 1 or len(confidence) != len(CONFIDENCE_FEATURES) + 1:
                raise ValueError("wrong number of coefficients")
            # "threshold" is what indexes built before the rename call it
            unknown_below = float(data["unknown_below"] if "unknown_below" in data else data["threshold"])
            if not all(math.isfinite(v) for v in ranking + confidence) or not 0.0 <= unknown_below <= 1.0:
                raise ValueError("coefficients must be finite and unknown_below a probability")
            return cls(ranking, confidence, unknown_below, str(data.get("fitted_on", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"calibration is not usable ({exc})") from None

    def rank_score(self, features: np.ndarray) -> np.ndarray:
        """Log-odds that each candidate (rows of ``ranking_features``) is the pin in the photo."""
        weights = np.asarray(self.ranking[1:], np.float64)
        scores = self.ranking[0] + features @ weights
        return np.where(np.isnan(features[:, 0]), _UNALIGNED, scores)

    def answer_confidence(self, top_score: float, lead: float) -> float:
        return sigmoid(self.confidence[0] + self.confidence[1] * top_score + self.confidence[2] * lead)


def sigmoid(log_odds: float) -> float:
    """Probability from log-odds, clipped so that no score overflows (the one sigmoid pinid uses)."""
    return float(1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, float(log_odds))))))


def percent(confidence: float) -> str:
    """A confidence for people: never "100%" or "0%", which a calibrated probability cannot promise."""
    if confidence >= 0.995:
        return ">99%"
    if confidence < 0.005:
        return "<1%"
    return f"{confidence:.0%}"


def ranking_features(distinct_inliers: Sequence[float], inlier_ratio: Sequence[float],
                     colour_distance: Sequence[float], clip_score: Sequence[float], aligned: Sequence[bool]
                     ) -> np.ndarray:
    """The ranking model's inputs; rows of unaligned candidates start with NaN."""
    colour = np.nan_to_num(np.asarray(colour_distance, np.float64), nan=_COLOUR_CAP)
    features = np.stack([np.log1p(np.asarray(distinct_inliers, np.float64)), np.asarray(inlier_ratio, np.float64),
                         np.minimum(colour, _COLOUR_CAP) / 10.0, np.asarray(clip_score, np.float64)], axis=1)
    features[~np.asarray(aligned, bool), 0] = np.nan
    return features.reshape(-1, len(RANKING_FEATURES))


def default_calibration() -> Calibration:
    """The calibration shipped with pinid (see ``fitted_on`` for the data it came from)."""
    text = resources.files("pinid.identify").joinpath("calibration.json").read_text(encoding="utf-8")
    return Calibration.from_dict(json.loads(text))


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method with a small ridge; returns bias then weights."""
    x = np.hstack([np.ones((len(features), 1)), np.asarray(features, np.float64)])
    y = np.asarray(labels, np.float64)
    w = np.zeros(x.shape[1])
    ridge = l2 * np.eye(x.shape[1])
    ridge[0, 0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -40, 40)))
        gradient = x.T @ (p - y) + ridge @ w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w
