"""fit_calibration: the one fit of the ranking and confidence models, on labelled candidate lists."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pinid.errors import IndexFormatError, InputError
from pinid.identify.confidence import (RANKING_FEATURES, Calibration, LabelledPhoto, candidate_features,
                                      default_calibration, fit_calibration)


def _candidate(rng: np.random.Generator, design: str, right: bool, aligned: bool = True,
               cosine: float = float("nan"), votes: float = 0.0, structure: float = float("nan"),
               **glance: float) -> SimpleNamespace:
    """A verified candidate: true pins have many inliers and a close colour, false ones few and far."""
    inliers = int(rng.integers(25, 90)) if right else int(rng.integers(4, 14))
    check = SimpleNamespace(distinct_inliers=inliers if aligned else 0,
                            inlier_ratio=rng.uniform(0.4, 0.8) if right else rng.uniform(0.05, 0.25),
                            colour_distance=rng.uniform(2, 10) if right else rng.uniform(15, 40),
                            aligned=aligned, structure=structure)
    return SimpleNamespace(verification=check, aligned=aligned, clip_score=cosine, design=design, pin_row=design,
                           votes=votes, **glance)


def _photos(count: int = 40, seed: int = 0) -> list[LabelledPhoto]:
    """Known photos (true pin aligned, plus false candidates) and strangers (false candidates only)."""
    rng = np.random.default_rng(seed)
    photos = []
    for p in range(count):
        known = p % 4 != 0
        candidates = ([_candidate(rng, "true", True)] if known else []) + [
            _candidate(rng, f"other-{i}", False) for i in range(3)] + [_candidate(rng, "x", False, aligned=False)]
        photos.append(LabelledPhoto(candidates, [known] + [False] * (len(candidates) - 1) if known
                                    else [False] * len(candidates)))
    return photos


def _clip_photos(count: int = 60, seed: int = 0) -> list[LabelledPhoto]:
    """Photos where nothing aligns and CLIP's leader, by a clear margin, is the pin (when it is known)."""
    rng = np.random.default_rng(seed)
    photos = []
    for p in range(count):
        known = p % 3 != 0
        cosines = np.sort(rng.uniform(0.55, 0.75, 6))[::-1]
        if known:
            cosines[0] += rng.uniform(0.08, 0.2)  # the true pin leads clearly
        candidates = [_candidate(rng, f"d{p}-{i}", False, aligned=False, cosine=float(c),
                                 votes=float(rng.integers(0, 5)))
                      for i, c in enumerate(cosines)]
        photos.append(LabelledPhoto(candidates, [known and i == 0 for i in range(len(candidates))]))
    return photos


def _answer(calibration: Calibration, photo: LabelledPhoto) -> tuple[bool, float]:
    """Whether the calibration's best candidate is right, and its confidence (as the recogniser answers)."""
    scores = calibration.rank_score(candidate_features(photo.candidates))
    top, lead, best = calibration.best_and_lead(scores, [c.pin_row for c in photo.candidates])
    return bool(photo.truth[best]), calibration.answer_confidence(top, lead)


def test_fit_learns_that_inliers_mean_the_pin_and_orders_right_answers_above_wrong() -> None:
    photos = _photos()
    fitted = fit_calibration(photos, fitted_on="40 synthetic photos")
    assert fitted.fitted_on == "40 synthetic photos" and fitted.unknown_below == 0.5 and fitted.self_test is None
    weights = fitted.weights()
    assert weights["log_distinct_inliers"] > 0 and weights["colour_distance"] < 0
    right, wrong = [], []
    for photo in _photos(seed=1):  # fresh photos
        is_right, confidence = _answer(fitted, photo)
        (right if is_right else wrong).append(confidence)
    assert right and wrong and min(right) > max(wrong)
    assert min(right) > fitted.unknown_below > max(wrong)
    assert Calibration.from_dict(fitted.to_dict()) == fitted  # fits are JSON-safe


def test_fit_learns_clip_where_clip_is_informative_and_answers_without_alignment() -> None:
    fitted = fit_calibration(_clip_photos(), fitted_on="CLIP photos")
    assert fitted.weights()["clip_margin"] > 1.0
    known, strangers = [], []
    for photo in _clip_photos(seed=1):
        is_right, confidence = _answer(fitted, photo)
        (known if any(photo.truth) else strangers).append((is_right, confidence))
    assert all(is_right for is_right, _ in known)  # nothing aligned, CLIP's leader is the answer
    # every known photo is surer than every stranger, and (the ranking fitted photo by photo weighs the cosine
    # itself, which says less across photos than the margin does) all but one are over the line
    surest_stranger = max(c for _, c in strangers)
    assert min(c for _, c in known) > surest_stranger and fitted.unknown_below > surest_stranger
    assert sum(c < fitted.unknown_below for _, c in known) <= 1


def test_without_clip_evidence_the_clip_weights_stay_zero() -> None:
    """A local-only index has no cosines: its fit must not invent a CLIP weight (nor crash)."""
    fitted = fit_calibration(_photos(), fitted_on="local")
    assert fitted.weights()["clip_cosine"] == 0.0 and fitted.weights()["clip_margin"] == 0.0


def test_candidate_features_use_geometry_only_where_aligned_and_clip_margins_by_design() -> None:
    rng = np.random.default_rng(3)
    candidates = [_candidate(rng, "fox", True, cosine=0.9, votes=4.0, glance=2.5, structure=0.6),
                  _candidate(rng, "fox", False, cosine=0.85, votes=2.0, glance=9.0),   # a colourway of the leader
                  _candidate(rng, "owl", False, aligned=False, cosine=0.7, votes=0.0, glance=-1.0, structure=0.4),
                  _candidate(rng, "cat", False, aligned=False, votes=1.0)]  # not in the CLIP top list, no glance
    features = candidate_features(candidates)
    column = {name: features[:, i] for i, name in enumerate(RANKING_FEATURES)}
    assert column["aligned"].tolist() == [1, 1, 0, 0]
    assert column["log_distinct_inliers"][2:].tolist() == [0, 0] and column["colour_distance"][2:].tolist() == [0, 0]
    assert column["log_distinct_inliers"][0] == pytest.approx(np.log1p(candidates[0].verification.distinct_inliers))
    assert column["clip_cosine"].tolist() == pytest.approx([0.9, 0.85, 0.7, 0.7])  # unlisted: the list's lowest
    # margin over the best of ANOTHER design: the sibling does not count as a rival
    assert column["clip_margin"].tolist() == pytest.approx([0.2, 0.15, -0.2, -0.2])
    assert column["vote_share"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.25])
    # capped at 5 spreads; only where aligned, like geometry and colour
    assert column["glance"].tolist() == pytest.approx([2.5, 5.0, 0.0, 0.0])
    # only where aligned; too little of the pin to compare (nan) says nothing
    assert column["structure"].tolist() == pytest.approx([0.6, 0.0, 0.0, 0.0])
    no_clip = candidate_features([_candidate(rng, "fox", True), _candidate(rng, "owl", False)])
    assert not no_clip[:, 4:6].any()
    assert candidate_features([]).shape == (0, len(RANKING_FEATURES))


def test_version_1_calibrations_answer_as_before() -> None:
    """Indexes built before evidence fusion: same score when aligned, the old flat -12 when not."""
    v1 = {"version": 1, "ranking_features": ["log_distinct_inliers", "inlier_ratio", "colour_distance", "clip_score"],
          "ranking": [-5.6, 2.6, 6.4, -0.84, 0.0], "confidence_features": ["top_score", "lead"],
          "confidence": [-0.34, 0.8, 0.43], "threshold": 0.5, "fitted_on": "old"}
    calibration = Calibration.from_dict(v1)
    rng = np.random.default_rng(0)
    aligned, unaligned = _candidate(rng, "a", True), _candidate(rng, "b", False, aligned=False, votes=3.0)
    scores = calibration.rank_score(candidate_features([aligned, unaligned]))
    check = aligned.verification
    old = -5.6 + 2.6 * np.log1p(check.distinct_inliers) + 6.4 * check.inlier_ratio - 0.84 * check.colour_distance / 10
    assert scores.tolist() == pytest.approx([old, -12.0])
    assert calibration.weights()["glance"] == 0.0 and calibration.weights()["structure"] == 0.0
    assert calibration.to_dict()["version"] == 5 and Calibration.from_dict(calibration.to_dict()) == calibration


def test_version_2_calibrations_answer_as_before_the_glance_counted() -> None:
    """Indexes calibrated before the glance was a ranking feature: every score as it was, whatever the glance."""
    v2 = {"version": 2, "ranking_features": list(RANKING_FEATURES[:7]),
          "ranking": [-6.8, 1.4, 2.2, 2.7, -1.1, 0.0, 0.0, 1.6], "confidence_features": ["top_score", "lead"],
          "confidence": [-0.4, 0.8, 0.5], "unknown_below": 0.5, "fitted_on": "before the glance"}
    calibration = Calibration.from_dict(v2)
    rng = np.random.default_rng(1)
    candidates = [_candidate(rng, "a", True, votes=2.0, glance=4.0),
                  _candidate(rng, "b", False, votes=1.0, glance=-2.0)]
    features = candidate_features(candidates)
    before = -6.8 + features[:, :7] @ np.array([1.4, 2.2, 2.7, -1.1, 0.0, 0.0, 1.6])
    assert calibration.rank_score(features).tolist() == pytest.approx(before.tolist())
    assert calibration.weights()["glance"] == 0.0 and calibration.to_dict()["version"] == 5
    with pytest.raises(IndexFormatError, match="version 2 with unexpected ranking features"):
        Calibration.from_dict({**v2, "ranking": v2["ranking"][:-1]})


def test_version_3_calibrations_answer_as_before_the_structure_counted() -> None:
    """Indexes calibrated before the structure agreement was a ranking feature: every score as it was."""
    v3 = {"version": 3, "ranking_features": list(RANKING_FEATURES[:8]),
          "ranking": [-6.8, 1.4, 2.2, 2.7, -1.1, 0.0, 0.0, 1.6, 0.9], "confidence_features": ["top_score", "lead"],
          "confidence": [-0.4, 0.8, 0.5], "unknown_below": 0.5, "fitted_on": "before the structure"}
    calibration = Calibration.from_dict(v3)
    rng = np.random.default_rng(1)
    candidates = [_candidate(rng, "a", True, votes=2.0, glance=4.0, structure=0.8),
                  _candidate(rng, "b", False, votes=1.0, glance=-2.0, structure=-0.1)]
    features = candidate_features(candidates)
    assert features[:, 8].tolist() == pytest.approx([0.8, -0.1])
    before = -6.8 + features[:, :8] @ np.array([1.4, 2.2, 2.7, -1.1, 0.0, 0.0, 1.6, 0.9])
    assert calibration.rank_score(features).tolist() == pytest.approx(before.tolist())
    assert calibration.weights()["structure"] == 0.0 and calibration.weights()["glance"] == 0.9
    assert calibration.to_dict()["version"] == 5
    with pytest.raises(IndexFormatError, match="version 3 with unexpected ranking features"):
        Calibration.from_dict({**v3, "ranking_features": list(RANKING_FEATURES[:7]) + ["colour"]})
    with pytest.raises(IndexFormatError, match="version 6"):
        Calibration.from_dict({**v3, "version": 6})


def test_version_4_calibrations_answer_as_before_the_second_order_terms_counted() -> None:
    """Indexes calibrated before the products and squares of the alignment measures: every score as it was."""
    first_order = list(RANKING_FEATURES[:9])
    v4 = {"version": 4, "ranking_features": first_order,
          "ranking": [-8.0, 2.3, 0.8, -2.6, -0.8, 0.0, 0.0, 2.3, 0.7, 4.5],
          "confidence_features": ["top_score", "lead"], "confidence": [-0.5, 0.6, 0.7], "unknown_below": 0.5,
          "fitted_on": "before the second-order terms"}
    calibration = Calibration.from_dict(v4)
    rng = np.random.default_rng(4)
    candidates = [_candidate(rng, "a", True, votes=2.0, glance=3.0, structure=0.7),
                  _candidate(rng, "b", False, votes=1.0, glance=-1.0, structure=0.1),
                  _candidate(rng, "c", False, aligned=False, votes=3.0)]
    features = candidate_features(candidates)
    assert features.shape == (3, len(RANKING_FEATURES)) and len(RANKING_FEATURES) == 19
    column = dict(zip(RANKING_FEATURES, features.T))
    assert column["colour_distance*structure"] == pytest.approx(column["colour_distance"] * column["structure"])
    assert column["glance*glance"].tolist() == pytest.approx([9.0, 1.0, 0.0])  # 0 where not aligned, like its parts
    before = -8.0 + features[:, :9] @ np.array(v4["ranking"][1:])
    assert calibration.rank_score(features).tolist() == pytest.approx(before.tolist())
    assert all(calibration.weights()[name] == 0.0 for name in RANKING_FEATURES[9:])
    assert calibration.to_dict()["version"] == 5 and Calibration.from_dict(calibration.to_dict()) == calibration
    with pytest.raises(IndexFormatError, match="version 4 with unexpected ranking features"):
        Calibration.from_dict({**v4, "ranking": v4["ranking"] + [0.0]})


def _confounded_photos(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Photos whose first feature rises with the true pin within a photo but falls with it across photos.

    Like the inlier ratio: a hard photo's true alignment has a lower ratio than an easy photo's chance one,
    and here every photo of a catalogue pin is a hard one, while strangers are photographed well.
    """
    rng = np.random.default_rng(seed)
    photos = []
    for p in range(count):
        known = p % 2 == 0
        level = 0.1 if known else 0.6
        ratio = level + rng.normal(0.0, 0.03, 6)
        weak = rng.normal(0.0, 1.0, 6)  # a second, weak sign of the true pin
        truth = np.zeros(6, bool)
        if known:
            truth[0] = True
            ratio[0] += 0.15
            weak[0] += 0.5
        photos.append((np.column_stack([ratio, weak]), truth))
    return photos


def test_the_ranking_is_fitted_photo_by_photo_where_photos_differ_from_one_another() -> None:
    from pinid.identify.confidence import fit_logistic, fit_ranking

    photos = _confounded_photos(200, 0)
    everything = np.concatenate([x for x, _ in photos])
    labels = np.concatenate([t for _, t in photos])
    listwise, pointwise = fit_ranking(photos), fit_logistic(everything, labels)
    assert listwise[1] > 0 > pointwise[1]  # within a photo, the higher ratio is the pin

    def first_right(weights: np.ndarray) -> float:
        fresh = [(x, t) for x, t in _confounded_photos(200, 1) if t.any()]
        return float(np.mean([t[int(np.argmax(weights[0] + x @ weights[1:]))] for x, t in fresh]))

    assert first_right(listwise) > 0.95 and first_right(pointwise) < 0.8
    # bias and scale make each score a candidate's log-odds in a photo of a catalogue pin: over those photos the
    # probabilities add up to the true candidates
    known_x = np.concatenate([x for x, t in photos if t.any()])
    probabilities = 1.0 / (1.0 + np.exp(-(listwise[0] + known_x @ listwise[1:])))
    assert probabilities.sum() == pytest.approx(labels.sum(), rel=0.05)
    # too few photos that hold a true and a false candidate: the pointwise fit
    few = photos[1:4] + [(x, np.zeros(len(x), bool)) for x, _ in photos[4:40]]
    few_x, few_labels = np.concatenate([x for x, _ in few]), np.concatenate([t for _, t in few])
    assert fit_ranking(few).tolist() == pytest.approx(fit_logistic(few_x, few_labels).tolist())


def test_the_glance_is_learned_where_it_tells_a_true_weak_alignment_from_a_chance_one() -> None:
    """Every photo's true pin and one rival align alike, weakly; only the glance differs: the fit must use it."""
    rng = np.random.default_rng(2)
    photos = []
    for p in range(60):
        weak = SimpleNamespace(distinct_inliers=4, inlier_ratio=0.2, colour_distance=20.0, aligned=True)
        true = SimpleNamespace(verification=weak, aligned=True, clip_score=float("nan"), design="true", pin_row=0,
                               votes=1.0, glance=float(rng.uniform(1.5, 3.0)))
        rival = SimpleNamespace(verification=weak, aligned=True, clip_score=float("nan"), design=f"other-{p}",
                                pin_row=p + 1, votes=1.0, glance=float(rng.uniform(-1.0, 1.0)))
        known = p % 3 != 0
        candidates = [true, rival] if known else [rival]
        photos.append(LabelledPhoto(candidates, [True, False] if known else [False]))
    fitted = fit_calibration(photos, fitted_on="glance")
    assert fitted.weights()["glance"] > 0
    scores = fitted.rank_score(candidate_features(photos[1].candidates))
    assert scores[0] > scores[1]


def test_too_few_candidates_is_an_input_error() -> None:
    with pytest.raises(InputError, match="too little to calibrate on: 3 photos gave 3 candidates of the "
                                         "true pin and 12 of other pins; at least 5 of each"):
        fit_calibration(_photos(4)[1:], fitted_on="")


def test_one_class_only_for_the_confidence_is_an_input_error() -> None:
    known_only = [photo for photo in _photos() if any(photo.truth)]  # every best candidate is right
    with pytest.raises(InputError, match="is right, so there is nothing to learn a confidence from"):
        fit_calibration(known_only, fitted_on="")


def test_labels_must_match_the_candidates() -> None:
    with pytest.raises(InputError, match="2 candidates but 1 labels"):
        LabelledPhoto([object(), object()], [True])


def test_self_test_round_trips_and_old_manifests_have_none() -> None:
    shipped = default_calibration()
    old = shipped.to_dict()
    assert "self_test" not in old and Calibration.from_dict(old).self_test is None
    tested = Calibration(shipped.ranking, shipped.confidence, 0.5, "20 photos", {"recall_at_1": 0.9, "auroc": 0.8})
    assert Calibration.from_dict(tested.to_dict()) == tested


def test_the_lead_is_over_another_pin_so_a_close_colourway_leaves_the_answer_unsure() -> None:
    calibration = default_calibration()
    scores = [3.0, 2.8, -5.0]
    top, lead, best = calibration.best_and_lead(scores, ["pin-a", "pin-a", "pin-b"])  # two images of one pin
    assert best == 0 and lead == pytest.approx(8.0)
    # another colourway of the design is another pin: a right design in the wrong colours is a wrong answer
    _, close, _ = calibration.best_and_lead(scores, ["pin-a", "pin-a-teal", "pin-b"])
    assert close == pytest.approx(0.2)
    # (the shipped calibration: a strong alignment far ahead is sure; with a sibling close behind it is not)
    assert calibration.answer_confidence(top, close) < 0.9 < calibration.answer_confidence(top, lead)
