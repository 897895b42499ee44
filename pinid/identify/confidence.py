"""One calibrated confidence per answer, and the line under which the answer is "unknown pin".

Two small logistic models, fitted on labelled photos (:func:`fit_calibration`; the shipped
coefficients by ``scripts/fit_calibration.py`` on the benchmark, an index's own by ``pinid calibrate``):

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

from ..errors import IndexFormatError, InputError

CALIBRATION_VERSION = 1
RANKING_FEATURES = ("log_distinct_inliers", "inlier_ratio", "colour_distance", "clip_score")
CONFIDENCE_FEATURES = ("top_score", "lead")
_COLOUR_CAP = 60.0  # Lab units; unaligned candidates count as this far off
_UNALIGNED = -12.0  # ranking score of a candidate without a homography
MIN_EACH_CLASS = 5  # aligned candidates needed of true and of false pins to fit the ranking


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients; an answer whose confidence is under ``unknown_below`` is "unknown pin"."""

    ranking: tuple[float, ...]  # bias, then one weight per RANKING_FEATURES
    confidence: tuple[float, ...]  # bias, then one weight per CONFIDENCE_FEATURES
    unknown_below: float
    fitted_on: str
    self_test: dict[str, Any] | None = None  # figures on the photos it was fitted on (``pinid calibrate``)

    def to_dict(self) -> dict[str, Any]:
        data = {"version": CALIBRATION_VERSION, "ranking_features": list(RANKING_FEATURES),
                "ranking": list(self.ranking), "confidence_features": list(CONFIDENCE_FEATURES),
                "confidence": list(self.confidence), "unknown_below": self.unknown_below,
                "fitted_on": self.fitted_on}
        if self.self_test is not None:
            data["self_test"] = dict(self.self_test)
        return data

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
            self_test = data.get("self_test")  # absent in manifests written before pinid calibrate
            if self_test is not None and not isinstance(self_test, dict):
                raise ValueError("self_test is not a JSON object")
            return cls(ranking, confidence, unknown_below, str(data.get("fitted_on", "")), self_test)
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


@dataclass(frozen=True)
class LabelledPhoto:
    """One labelled photo's verified candidates and, for each, whether it shows the true pin.

    ``candidates`` are ``pinid.identify.recogniser.Candidate`` objects as
    ``PinIndex.verified_candidates`` returns them; ``truth`` is all false for a
    photo of a pin that is not in the catalogue (or whose pin was not found).
    """

    candidates: Sequence[Any]
    truth: Sequence[bool]

    def __post_init__(self) -> None:
        if len(self.candidates) != len(self.truth):
            raise InputError(f"a labelled photo has {len(self.candidates)} candidates but {len(self.truth)} labels")


def candidate_features(candidates: Sequence[Any]) -> np.ndarray:
    """``ranking_features`` of verified candidates (rows of unaligned ones start with NaN)."""
    return ranking_features([c.verification.distinct_inliers for c in candidates],
                            [c.verification.inlier_ratio for c in candidates],
                            [c.verification.colour_distance for c in candidates],
                            [0.0 if np.isnan(c.clip_score) else c.clip_score for c in candidates],
                            [c.aligned for c in candidates])


def fit_calibration(samples: Sequence[LabelledPhoto], *, fitted_on: str, unknown_below: float = 0.5
                    ) -> Calibration:
    """Fit the ranking and confidence models on labelled photos: the one fit pinid has.

    The ranking is fitted on every aligned candidate (true pin or not); the
    confidence on each photo with an aligned candidate, from the best one's
    score and its lead over the best aligned rival of another design (as
    ``Recogniser.confidence`` answers), labelled by whether that best one is right.

    Raises:
        InputError: fewer than ``MIN_EACH_CLASS`` aligned candidates of true or of false pins, or
            best candidates that are all right or all wrong (nothing to learn a confidence from).
    """
    aligned = []
    for sample in samples:
        keep = [i for i, c in enumerate(sample.candidates) if c.aligned]
        aligned.append((candidate_features([sample.candidates[i] for i in keep]),
                        np.array([bool(sample.truth[i]) for i in keep], bool),
                        [sample.candidates[i].design for i in keep]))
    labels = np.concatenate([truth for _, truth, _ in aligned]) if aligned else np.zeros(0, bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives < MIN_EACH_CLASS or negatives < MIN_EACH_CLASS:
        raise InputError(f"too little to calibrate on: {len(samples)} photos gave {positives} aligned candidates "
                         f"of the true pin and {negatives} of other pins; at least {MIN_EACH_CLASS} of each "
                         "are needed (label more photos, including some of pins not in the catalogue)")
    ranking = fit_logistic(np.concatenate([features for features, _, _ in aligned]), labels)
    draft = Calibration(tuple(float(v) for v in ranking), (0.0, 1.0, 0.0), unknown_below, "")
    top_scores, leads, correct = [], [], []
    for features, truth, designs in aligned:
        if not len(features):
            continue
        scores = draft.rank_score(features)
        order = np.argsort(-scores, kind="stable")
        best = order[0]
        rival = next((scores[i] for i in order[1:] if designs[i] != designs[best]), ranking[0])
        top_scores.append(scores[best])
        leads.append(scores[best] - rival)
        correct.append(bool(truth[best]))
    if len(set(correct)) < 2:
        raise InputError(f"too little to calibrate on: the best candidate of every one of {len(correct)} aligned "
                         f"photos is {'right' if all(correct) else 'wrong'}, so there is nothing to learn a "
                         "confidence from (add photos of pins not in the catalogue, or harder photos)")
    confidence = fit_logistic(np.column_stack([top_scores, leads]), np.array(correct))
    return Calibration(tuple(float(v) for v in ranking), tuple(float(v) for v in confidence), unknown_below,
                       fitted_on)
