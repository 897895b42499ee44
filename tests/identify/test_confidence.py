"""fit_calibration: the one fit of the ranking and confidence models, on labelled candidate lists."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pinid.errors import InputError
from pinid.identify.confidence import Calibration, LabelledPhoto, default_calibration, fit_calibration


def _candidate(rng: np.random.Generator, design: str, right: bool, aligned: bool = True) -> SimpleNamespace:
    """A verified candidate: true pins have many inliers and a close colour, false ones few and far."""
    inliers = int(rng.integers(25, 90)) if right else int(rng.integers(4, 14))
    check = SimpleNamespace(distinct_inliers=inliers if aligned else 0,
                            inlier_ratio=rng.uniform(0.4, 0.8) if right else rng.uniform(0.05, 0.25),
                            colour_distance=rng.uniform(2, 10) if right else rng.uniform(15, 40),
                            aligned=aligned)
    return SimpleNamespace(verification=check, aligned=aligned, clip_score=float("nan"), design=design)


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


def test_fit_learns_that_inliers_mean_the_pin_and_orders_right_answers_above_wrong() -> None:
    photos = _photos()
    fitted = fit_calibration(photos, fitted_on="40 synthetic photos")
    assert fitted.fitted_on == "40 synthetic photos" and fitted.unknown_below == 0.5 and fitted.self_test is None
    assert fitted.ranking[1] > 0  # log distinct inliers
    assert fitted.ranking[3] < 0  # colour distance
    right, wrong = [], []
    for photo in _photos(seed=1):  # fresh photos
        aligned = [c for c in photo.candidates if c.aligned]
        scores = fitted.rank_score(np.array([[np.log1p(c.verification.distinct_inliers), c.verification.inlier_ratio,
                                              min(c.verification.colour_distance, 60) / 10, 0.0] for c in aligned]))
        order = np.argsort(-scores)
        rival = next(scores[i] for i in order[1:] if aligned[i].design != aligned[order[0]].design)
        confidence = fitted.answer_confidence(scores[order[0]], scores[order[0]] - rival)
        (right if photo.truth[photo.candidates.index(aligned[order[0]])] else wrong).append(confidence)
    assert right and wrong and min(right) > max(wrong)
    assert min(right) > fitted.unknown_below > max(wrong)
    assert Calibration.from_dict(fitted.to_dict()) == fitted  # fits are JSON-safe


def test_too_few_aligned_candidates_is_an_input_error() -> None:
    with pytest.raises(InputError, match="too little to calibrate on: 3 photos gave 3 aligned candidates of the "
                                         "true pin and 9 of other pins; at least 5 of each"):
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
