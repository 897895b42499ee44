"""One calibrated confidence per answer, and the line under which the answer is "unknown pin".

Two small logistic models, fitted on labelled photos (:func:`fit_calibration`; the shipped
coefficients by ``scripts/fit_calibration.py`` on the benchmark, an index's own by ``pinid calibrate``,
on simulated photos of its catalogue or on your labelled ones):

* **ranking** scores every verified candidate from all the evidence there is:
  whether it aligned, and if so its geometry and colour (distinct inliers,
  inlier ratio, colour distance); CLIP's cosine and its margin over the best
  candidate of another design; the candidate's share of the local-feature
  vote; and, where it aligned, how like the photo's pin it looks as a whole
  (the glance's colours and silhouette, :mod:`pinid.local.glance`) and how well
  the photo's edges follow the aligned reference's
  (:func:`pinid.local.verify.structure_agreement`): both tell a weak true
  alignment from a chance one. It also weighs the products and squares of
  those four alignment measures (inliers, colour, structure, glance), and it
  is fitted photo by photo (:func:`fit_ranking`: which of this photo's
  candidates is the pin?).
  An unaligned candidate is therefore ranked by its CLIP and vote evidence, and a
  CLIP answer with a clear margin can win without alignment, as far as the
  fitted weights say CLIP is worth it on this index;
* **confidence** turns the best candidate's ranking score and its lead over
  the runner-up *of another pin* into the probability that the answer is
  right. Other images of the same pin are no rivals; another colourway of its
  design is: the right design in the wrong colours is a wrong answer, and a
  sibling that the colours hardly tell apart leaves the answer unsure. On the
  benchmark, leads over another design only (as before) gave the wrong
  colourway confidences near 1 on boards; over another pin, right and wrong
  answers of 600 photos separate with AUROC 0.940 against 0.934, and known
  from unknown pins with 0.684 against 0.699 (README, "Boards, pin by pin").

The fitted coefficients ship with the package (``calibration.json``, the
fallback for catalogues too small to calibrate on) and are copied into each
index's manifest at build time, so an index keeps answering the same way after
pinid is upgraded. JSON only, no pickle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ..errors import IndexFormatError, InputError

CALIBRATION_VERSION = 5
_FIRST_ORDER = ("aligned", "log_distinct_inliers", "inlier_ratio", "colour_distance", "clip_cosine", "clip_margin",
                "vote_share", "glance", "structure")
# the alignment's own measures, whose products and squares the ranking also weighs: how much a colour distance
# says depends on how sure the map is (many inliers, edges that follow), and a close colour on a glance-alike
# pin says more than either alone
_SECOND_ORDER_OF = ("log_distinct_inliers", "colour_distance", "structure", "glance")
RANKING_FEATURES = _FIRST_ORDER + tuple(f"{first}*{second}" for i, first in enumerate(_SECOND_ORDER_OF)
                                        for second in _SECOND_ORDER_OF[i:])
CONFIDENCE_FEATURES = ("top_score", "lead")
_COLOUR_CAP = 60.0  # Lab units: a colour this far off says no more than any farther one
_GLANCE_CAP = 5.0  # catalogue spreads: a glance this far from the catalogue's mean says no more than a farther one
MIN_EACH_CLASS = 5  # candidates needed of true and of false pins to fit the ranking
_V1_FEATURES = ("log_distinct_inliers", "inlier_ratio", "colour_distance", "clip_score")
_V1_UNALIGNED = -12.0  # version 1 gave every unaligned candidate this score
_V2_FEATURES = RANKING_FEATURES[:7]  # version 2 had no glance
_V3_FEATURES = RANKING_FEATURES[:8]  # ... and version 3 no structure agreement
_V4_FEATURES = _FIRST_ORDER  # ... and version 4 no second-order terms


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
            if data["version"] == 1:  # indexes built before evidence fusion keep answering as they did
                data = _from_version_1(data)
            if data["version"] == 2:  # ... and those built before the glance counted (weight 0)
                data = _from_version_2(data)
            if data["version"] == 3:  # ... and those built before the structure agreement counted (weight 0)
                data = _from_version_3(data)
            if data["version"] == 4:  # ... and those built before the second-order terms counted (weight 0)
                data = _from_version_4(data)
            elif data["version"] != CALIBRATION_VERSION:
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
        """Log-odds that each candidate (rows of :func:`candidate_features`) is the pin in the photo."""
        return self.ranking[0] + np.asarray(features, np.float64) @ np.asarray(self.ranking[1:], np.float64)

    def answer_confidence(self, top_score: float, lead: float) -> float:
        return sigmoid(self.confidence[0] + self.confidence[1] * top_score + self.confidence[2] * lead)

    def best_and_lead(self, scores: Sequence[float], pins: Sequence[Hashable], best: int | None = None
                      ) -> tuple[float, float, int]:
        """A candidate's score, its lead over the best candidate of another pin, and its position.

        ``pins`` names each candidate's pin (its images are one pin; another
        colourway of its design is another pin: a right design in the wrong
        colours is a wrong answer). ``best`` defaults to the highest score (ties:
        the first). Without a rival the lead is over the bias: how a candidate
        with no evidence at all scores.
        """
        values = np.asarray(scores, np.float64)
        if best is None:
            best = int(np.argmax(values))
        rivals = [float(v) for v, pin in zip(values, pins) if pin != pins[best]]
        rival = max(rivals) if rivals else self.ranking[0]
        return float(values[best]), float(values[best]) - rival, best

    def weights(self) -> dict[str, float]:
        """The ranking weight of each feature by name (what ``pinid info`` shows: is CLIP trusted here?)."""
        return dict(zip(RANKING_FEATURES, self.ranking[1:]))


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 calibration in today's features, answering as it did.

    Version 1 scored aligned candidates ``bias + weights . (log inliers, ratio,
    colour, cosine)`` and every unaligned one a flat -12: here the flat score is
    the bias and the old bias rides on the "aligned" feature (CLIP's weight, 0 in
    every shipped version-1 calibration, now also applies to unaligned candidates).
    """
    old = [float(v) for v in data["ranking"]]
    if list(data.get("ranking_features", _V1_FEATURES)) != list(_V1_FEATURES) or len(old) != 5:
        raise ValueError("version 1 with unexpected ranking features")
    bias, inliers, ratio, colour, clip = old
    return {**data, "version": 2, "ranking_features": list(_V2_FEATURES),
            "ranking": [_V1_UNALIGNED, bias - _V1_UNALIGNED, inliers, ratio, colour, clip, 0.0, 0.0]}


def _from_version_2(data: dict[str, Any]) -> dict[str, Any]:
    """A version-2 calibration as version 3, answering as it did: the glance gets weight 0."""
    return _with_new_feature(data, 2, _V2_FEATURES, _V3_FEATURES)


def _from_version_3(data: dict[str, Any]) -> dict[str, Any]:
    """A version-3 calibration as version 4, answering as it did: the structure agreement gets weight 0."""
    return _with_new_feature(data, 3, _V3_FEATURES, _V4_FEATURES)


def _from_version_4(data: dict[str, Any]) -> dict[str, Any]:
    """A version-4 calibration in today's features, answering as it did: the second-order terms get weight 0."""
    return _with_new_feature(data, 4, _V4_FEATURES, RANKING_FEATURES)


def _with_new_feature(data: dict[str, Any], version: int, features: tuple[str, ...], then: tuple[str, ...]
                      ) -> dict[str, Any]:
    ranking = list(data["ranking"])
    if list(data.get("ranking_features", features)) != list(features) or len(ranking) != len(features) + 1:
        raise ValueError(f"version {version} with unexpected ranking features")
    return {**data, "version": version + 1, "ranking_features": list(then),
            "ranking": ranking + [0.0] * (len(then) - len(features))}


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


def default_calibration() -> Calibration:
    """The calibration shipped with pinid (see ``fitted_on`` for the data it came from)."""
    text = resources.files("pinid.identify").joinpath("calibration.json").read_text(encoding="utf-8")
    return Calibration.from_dict(json.loads(text))


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, iterations: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method with a small ridge; returns bias then weights.

    Each feature is standardised for the fit (the ridge then means the same for
    a cosine margin of 0.01 as for an inlier count of 50) and its weight mapped
    back; a feature that never varies gets weight 0.
    """
    raw = np.asarray(features, np.float64).reshape(len(features), -1)
    mean, spread = raw.mean(axis=0), raw.std(axis=0)
    varies = spread > 1e-9
    x = np.hstack([np.ones((len(raw), 1)), (raw[:, varies] - mean[varies]) / spread[varies]])
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
    weights = np.zeros(raw.shape[1])
    weights[varies] = w[1:] / spread[varies]
    return np.concatenate([[w[0] - float(weights @ mean)], weights])


def fit_ranking(photos: Sequence[tuple[np.ndarray, np.ndarray]], l2: float = 1.0, iterations: int = 50
                ) -> np.ndarray:
    """Ranking weights (bias, then one per feature) fitted to put each photo's true pin first.

    The ranking answers one question: which of *this photo's* candidates is
    the pin. A pointwise fit (every candidate true or false on its own) mixes
    that with how photos differ from one another: a hard photo's true
    alignment has a lower inlier ratio than an easy photo's chance one, and
    the pointwise fit gave the inlier ratio a negative weight, while within
    a photo the true pin has the higher ratio. So the weights come from a
    conditional logit over each photo's candidates (the softmax of their
    scores; photos with a true and a false candidate), by Newton's method
    with a ridge on standardised features, and one logistic regression on
    the resulting score over those photos' candidates then sets its bias and
    scale, so that a score stays a candidate's log-odds of being the pin in a
    photo of a catalogue pin (how sure the answer is, strangers included, is
    the confidence model's question). Fitted on 900 full-benchmark photos
    and scored on 1,000 others, single-pin recall@1 was 0.638 against 0.626
    pointwise with the first-order features, 0.647 with the second-order
    terms too (README, "A ranking fitted photo by photo").
    ``photos`` are (features (n, d), truth (n,)) pairs; with fewer than
    ``MIN_EACH_CLASS`` photos that hold both, the pointwise fit is used.
    """
    if not photos:
        raise InputError("no photos to fit a ranking on")
    usable = [(np.asarray(x, np.float64), np.asarray(t, bool)) for x, t in photos
              if len(t) and np.any(t) and not np.all(t)]
    everything = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x, _ in photos])
    labels = np.concatenate([np.asarray(t, bool) for _, t in photos])
    if len(usable) < MIN_EACH_CLASS:
        return fit_logistic(everything, labels)
    raw = np.concatenate([x for x, _ in usable])
    truth = np.concatenate([t for _, t in usable])
    starts = np.cumsum([0] + [len(t) for _, t in usable[:-1]])
    group = np.repeat(np.arange(len(usable)), [len(t) for _, t in usable])
    mean, spread = raw.mean(axis=0), raw.std(axis=0)
    varies = spread > 1e-9
    x = (raw[:, varies] - mean[varies]) / spread[varies]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        z = x @ w
        z = z - np.maximum.reduceat(z, starts)[group]
        p = np.exp(z)
        every = np.add.reduceat(p, starts)
        right = np.add.reduceat(np.where(truth, p, 0.0), starts)
        loss = float(np.sum(np.log(every) - np.log(right))) + 0.5 * l2 * float(w @ w)
        p_all, p_right = p / every[group], np.where(truth, p, 0.0) / right[group]
        mean_all = np.add.reduceat(p_all[:, None] * x, starts)
        gradient = (mean_all - np.add.reduceat(p_right[:, None] * x, starts)).sum(axis=0) + l2 * w
        # the candidates' spread under the softmax: the exact Hessian when a photo has one true candidate
        hessian = (x * p_all[:, None]).T @ x - mean_all.T @ mean_all + l2 * np.eye(len(w))
        return loss, gradient, hessian

    w = np.zeros(x.shape[1])
    loss, gradient, hessian = objective(w)
    for _ in range(iterations):
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6:  # halve the step until the loss falls
            trial = objective(w - size * step)
            if trial[0] <= loss:
                break
            size *= 0.5
        else:
            break
        w = w - size * step
        loss, gradient, hessian = trial
        if np.abs(size * step).max() < 1e-8:
            break
    weights = np.zeros(raw.shape[1])
    weights[varies] = w / spread[varies]
    bias, scale = fit_logistic((raw @ weights)[:, None], truth)
    if not scale > 0:  # the score does not order these photos' own candidates: nothing to scale; fit pointwise
        return fit_logistic(everything, labels)
    return np.concatenate([[bias], scale * weights])


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
    """The ranking model's inputs for one photo's verified candidates (one row each, RANKING_FEATURES).

    Candidates are ``pinid.identify.recogniser.Candidate`` objects (or anything
    with ``verification``, ``aligned``, ``clip_score``, ``votes``, ``design`` and
    optionally ``glance``, 0 when absent).
    Geometry, colour, structure and the glance count only where a candidate aligned (the
    glance and the vote alone would make a small catalogue's stranger known). A candidate
    outside the photo's CLIP top list gets the lowest cosine of the list (it
    ranked below it); an index without CLIP gives cosine and margin 0. The
    margin is a candidate's cosine minus the best cosine of another design, so
    it is positive only for the CLIP leader and says by how much it leads.
    The last columns are the products and squares of log inliers, colour,
    structure and glance (0 wherever the candidate did not align).
    """
    count = len(candidates)
    features = np.zeros((count, len(RANKING_FEATURES)), np.float64)
    if not count:
        return features
    aligned = np.array([bool(c.aligned) for c in candidates])
    inliers = np.array([float(c.verification.distinct_inliers) for c in candidates])
    ratio = np.array([float(c.verification.inlier_ratio) for c in candidates])
    colour = np.array([_COLOUR_CAP if c.verification.colour_distance is None
                       else float(c.verification.colour_distance) for c in candidates])
    colour = np.minimum(np.nan_to_num(colour, nan=_COLOUR_CAP), _COLOUR_CAP)
    features[:, 0] = aligned
    features[:, 1] = np.where(aligned, np.log1p(inliers), 0.0)
    features[:, 2] = np.where(aligned, ratio, 0.0)
    features[:, 3] = np.where(aligned, colour / 10.0, 0.0)
    cosine = np.array([np.nan if c.clip_score is None else float(c.clip_score) for c in candidates])
    listed = ~np.isnan(cosine)
    if listed.any():
        cosine = np.where(listed, cosine, cosine[listed].min())
        designs = [c.design for c in candidates]
        best: dict[str, float] = {}
        for design, value in zip(designs, cosine):
            best[design] = max(best.get(design, -np.inf), float(value))
        ranked = sorted(best.items(), key=lambda item: -item[1])
        for i, design in enumerate(designs):
            rival = next((value for other, value in ranked if other != design), None)
            features[i, 5] = 0.0 if rival is None else cosine[i] - rival
        features[:, 4] = cosine
    votes = np.array([float(getattr(c, "votes", 0.0) or 0.0) for c in candidates])
    if votes.max() > 0:
        features[:, 6] = votes / votes.max()
    glance = np.array([float(getattr(c, "glance", 0.0) or 0.0) for c in candidates])
    features[:, 7] = np.where(aligned, np.clip(np.nan_to_num(glance), -_GLANCE_CAP, _GLANCE_CAP), 0.0)
    # -1..1; nan (too little of the pin in the photo to compare) says nothing
    structure = np.array([float(getattr(c.verification, "structure", np.nan)) for c in candidates])
    features[:, 8] = np.where(aligned, np.nan_to_num(structure), 0.0)
    column = {name: features[:, i] for i, name in enumerate(_FIRST_ORDER)}
    for i, name in enumerate(RANKING_FEATURES[len(_FIRST_ORDER):], len(_FIRST_ORDER)):
        first, second = name.split("*")
        features[:, i] = column[first] * column[second]
    return features


def fit_calibration(samples: Sequence[LabelledPhoto], *, fitted_on: str, unknown_below: float = 0.5,
                    ranking_fit: Callable[[Sequence[tuple[np.ndarray, np.ndarray]]], np.ndarray] | None = None
                    ) -> Calibration:
    """Fit the ranking and confidence models on labelled photos: the one fit pinid has.

    The ranking is fitted on every verified candidate (true pin or not, aligned
    or not), photo by photo (:func:`fit_ranking`; ``ranking_fit`` swaps in
    another fit of (features, truth) pairs, as ``scripts/compare_rankings.py``
    does to compare them); the confidence on each photo with a candidate, from
    the best one's score and its lead over the best rival of another pin (as
    ``Recogniser.confidence`` answers), labelled by whether that best one is right.

    Raises:
        InputError: fewer than ``MIN_EACH_CLASS`` candidates of true or of false pins, or
            best candidates that are all right or all wrong (nothing to learn a confidence from).
    """
    photos = [(candidate_features(sample.candidates), np.array([bool(t) for t in sample.truth], bool),
               [c.pin_row for c in sample.candidates]) for sample in samples if len(sample.candidates)]
    labels = np.concatenate([truth for _, truth, _ in photos]) if photos else np.zeros(0, bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives < MIN_EACH_CLASS or negatives < MIN_EACH_CLASS:
        raise InputError(f"too little to calibrate on: {len(samples)} photos gave {positives} candidates "
                         f"of the true pin and {negatives} of other pins; at least {MIN_EACH_CLASS} of each "
                         "are needed (label more photos, including some of pins not in the catalogue)")
    ranking = (ranking_fit or fit_ranking)([(features, truth) for features, truth, _ in photos])
    draft = Calibration(tuple(float(v) for v in ranking), (0.0, 1.0, 0.0), unknown_below, "")
    top_scores, leads, correct = [], [], []
    for features, truth, pins in photos:
        top, lead, best = draft.best_and_lead(draft.rank_score(features), pins)
        top_scores.append(top)
        leads.append(lead)
        correct.append(bool(truth[best]))
    if len(set(correct)) < 2:
        raise InputError(f"too little to calibrate on: the best candidate of every one of {len(correct)} "
                         f"photos is {'right' if all(correct) else 'wrong'}, so there is nothing to learn a "
                         "confidence from (add photos of pins not in the catalogue, or harder photos)")
    confidence = fit_logistic(np.column_stack([top_scores, leads]), np.array(correct))
    return Calibration(tuple(float(v) for v in ranking), tuple(float(v) for v in confidence), unknown_below,
                       fitted_on)
