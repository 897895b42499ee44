"""Local features, verification, colour check, confidence and multi-pin photos on small generated data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pinid.catalogue import read_catalogue
from pinid.identify.confidence import Calibration, default_calibration, fit_logistic
from pinid.errors import IndexFormatError, PinidError
from pinid.evaluation.boards import polygon_iou
from pinid.index import PinIndex
from pinid.local.features import (DESCRIPTOR_DIMS, THUMBNAIL_SIDE, FeatureConfig, Features, encode_descriptors,
                                  query_features, reference_entry)
from pinid.local.glance import photo_silhouette
from pinid.local.verify import (LabPyramid, VerifyConfig, aligned_thumbnail, balance_illumination, colour_distance,
                               hough_filter, outline_alignment, seeded_affine, structure_agreement, verify,
                               verify_geometry, with_dense_checks)

from tests.support import (FLAG, KITE, PERSPECTIVE, SIDE, background, pin, place, plain_pin, recolour,
                           recolour_hsv)















def test_known_homography_is_recovered() -> None:
    reference = pin(3)
    entry = reference_entry(reference)
    photo = place(background(), reference, PERSPECTIVE)
    features = query_features(Image.fromarray(photo))
    result = verify(features, cv2.cvtColor(photo, cv2.COLOR_RGB2LAB), [(0, entry)])[0]
    assert result.aligned and result.distinct_inliers >= 10
    corners = entry.outline.reshape(-1, 1, 2)
    expected = cv2.perspectiveTransform(corners, PERSPECTIVE).reshape(-1, 2)
    found = cv2.perspectiveTransform(corners, result.homography).reshape(-1, 2)
    # within 6 px on a 208-px pin: keypoints from simulated views are mapped back with some error
    assert np.abs(found - expected).max() < 6.0
    assert np.abs(result.polygon - expected).max() < 6.0
    assert result.colour_distance < 10.0


def test_structure_agreement_tells_a_true_alignment_from_a_chance_one() -> None:
    """The aligned photo's edges follow the reference's whatever the light's polarity; a wrong map's do not."""
    reference = pin(3)
    entry = reference_entry(reference)
    photo = place(background(), reference, PERSPECTIVE)
    lab = cv2.cvtColor(photo, cv2.COLOR_RGB2LAB)
    true = structure_agreement(entry, *aligned_thumbnail(entry, lab, PERSPECTIVE))
    assert verify(query_features(Image.fromarray(photo)), lab, [(0, entry)])[0].structure == pytest.approx(
        true, abs=0.15)  # what verification keeps, from the homography it found
    negative = lab.copy()
    negative[:, :, 0] = 255 - negative[:, :, 0]  # raised metal lines turn from dark to light
    turned = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), 90, 1.0)
    wrong = PERSPECTIVE @ np.vstack([turned, [0.0, 0.0, 1.0]])  # the right place, a quarter-turn off
    other = reference_entry(pin(7))
    assert true > 0.5
    assert structure_agreement(entry, *aligned_thumbnail(entry, negative, PERSPECTIVE)) > 0.5
    assert abs(structure_agreement(entry, *aligned_thumbnail(entry, lab, wrong))) < 0.5 * true
    assert abs(structure_agreement(other, *aligned_thumbnail(other, lab, PERSPECTIVE))) < 0.5 * true
    # a map that puts the pin outside the photo leaves nothing to compare
    away = np.array([[1.0, 0.0, 10 * SIDE], [0.0, 1.0, 10 * SIDE], [0.0, 0.0, 1.0]])
    assert np.isnan(structure_agreement(entry, *aligned_thumbnail(entry, lab, away)))


@pytest.mark.parametrize("scale", [0.3, 1.0, 5.0])
def test_dense_checks_read_the_pyramid_level_that_fits_the_pin(scale: float) -> None:
    """A pin shown small, as shot or five times larger is compared at its own place: the pyramid level
    is chosen by the pin's size and mapped back exactly (an off-by-a-level map would scramble both checks)."""
    reference = pin(3)
    entry = reference_entry(reference)
    placed = np.array([[scale, 0.0, 40.0], [0.0, scale, 30.0], [0.0, 0.0, 1.0]])
    photo = cv2.cvtColor(place(background(1400, 1400), reference, placed), cv2.COLOR_RGB2LAB)
    pyramid = LabPyramid(photo)
    warped, valid = aligned_thumbnail(entry, pyramid, placed)
    assert valid.all()
    assert structure_agreement(entry, warped, valid) > 0.6
    assert colour_distance(entry, pyramid, placed) < 8.0
    halvings = {0.3: 0, 1.0: 1, 5.0: 3}[scale]  # the pin box is ~208 px at scale 1; 1.5 thumbnails are 72 px
    assert len(pyramid.levels) == halvings + 1


def test_inliers_in_a_thin_band_align_by_a_similarity_where_the_photo_confirms_it() -> None:
    """True matches at a few places along one line of the pin leave an affine map's shear free (insane); a
    similarity fits them, and stands only where the photo's edges follow the reference's."""
    entry = reference_entry(pin(3))
    turn = cv2.getRotationMatrix2D((0, 0), 30, 0.8)
    turn[:, 2] = (150, 120)
    similarity = np.vstack([turn, [0.0, 0.0, 1.0]])
    photo = cv2.cvtColor(place(background(), pin(3), similarity), cv2.COLOR_RGB2LAB)
    keypoints = entry.features.keypoints
    x0, y0, x1, y1 = entry.pin_box
    band = np.flatnonzero((np.abs(keypoints[:, 1] - (y0 + y1) / 2) < 3) & (keypoints[:, 0] > x0)
                          & (keypoints[:, 0] < x1))
    _, one_each = np.unique(np.round(keypoints[band, 0] / 4), return_index=True)  # one keypoint per place
    places = band[one_each][np.argsort(keypoints[band[one_each], 0])]
    assert len(places) >= 4
    area = float(photo.shape[0] * photo.shape[1])

    def verified(rows: np.ndarray, config: VerifyConfig = VerifyConfig()):
        seen = keypoints[rows].copy()
        seen[:, :2] = cv2.perspectiveTransform(seen[:, :2].reshape(-1, 1, 2).astype(np.float64),
                                               similarity).reshape(-1, 2)
        seen[:, 1] += np.resize([3.0, -3.0], len(rows))  # a few pixels of keypoint noise across the band
        seen[:, 2] *= 0.8
        seen[:, 3] = (seen[:, 3] - 30) % 360
        query = Features(seen.astype(np.float32), entry.features.descriptors[rows], photo.shape[1], photo.shape[0])
        return verify_geometry(0, entry, query, rows, np.arange(len(rows)), area, config=config)

    rows = places[:4].repeat(2)  # SIFT finds several keypoints at one place
    assert not verified(rows, VerifyConfig(similarity_fallback=0)).aligned
    found = verified(rows)
    assert found.aligned and found.similarity_only and found.distinct_inliers >= 3
    # matches at only two places: any two fit a similarity, so they are no evidence
    assert not verified(places[[0, 2]].repeat(3)).aligned
    corners = entry.outline.reshape(-1, 1, 2)
    placed = cv2.perspectiveTransform(corners, similarity).reshape(-1, 2)
    assert np.abs(found.polygon - placed).max() < 0.1 * SIDE
    confirmed = with_dense_checks(found, entry, photo)
    assert confirmed.aligned and confirmed.structure > 0.3 and confirmed.colour_distance < 20
    # the same matches over a photo without the pin: nothing confirms the map, so nothing aligned
    assert not with_dense_checks(found, entry, cv2.cvtColor(background(), cv2.COLOR_RGB2LAB)).aligned
    # a full alignment is never undone by the dense checks: they only measure it
    full = replace(found, similarity_only=False)
    assert with_dense_checks(full, entry, cv2.cvtColor(background(), cv2.COLOR_RGB2LAB)).aligned


#: a plain pin's place in a photo: turned, sheared and reduced; and the same with the pin mirrored
SHEARED = np.array([[0.74, -0.33, 300.0], [0.52, 0.21, 150.0], [0.0, 0.0, 1.0]])
MIRRORED = SHEARED @ np.array([[-1.0, 0.0, SIDE], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("placed", [SHEARED, MIRRORED], ids=["as taken", "mirrored"])
def test_a_plain_pin_that_keypoints_cannot_align_aligns_by_its_outline(placed: np.ndarray) -> None:
    """One enamel field in a rim gives SIFT nothing to match; the outline brings the reference onto the
    photo's pin, as taken or mirrored, and the photo's edges confirm it. Another outline is not confirmed."""
    shot, mask = plain_pin(FLAG)
    entry = reference_entry(shot)
    photo = place(np.full((540, 720, 3), (60, 120, 70), np.uint8), shot, placed, mask)
    lab = cv2.cvtColor(photo, cv2.COLOR_RGB2LAB)
    area = float(photo.shape[0] * photo.shape[1])
    assert not verify(query_features(Image.fromarray(photo)), lab, [(0, entry)])[0].aligned
    seen = photo_silhouette(photo)
    assert seen is not None
    found = outline_alignment(7, entry, seen, lab, area)
    assert found is not None and found.aligned and found.outline_only and found.image_id == 7
    assert found.distinct_inliers == 0 and found.structure >= VerifyConfig().outline_min_structure
    assert found.colour_distance < 10.0
    expected = cv2.perspectiveTransform(entry.outline.reshape(-1, 1, 2), placed).reshape(-1, 2)
    # within 20 px on a pin some 150 px across: the photo's pin is found at 256 px, turns in 5-degree steps
    assert np.abs(found.polygon - expected).max() < 20.0
    assert (np.linalg.det(found.homography[:2, :2]) < 0) == (placed is MIRRORED)
    assert outline_alignment(8, reference_entry(plain_pin(KITE)[0]), seen, lab, area) is None
    assert outline_alignment(7, entry, seen, lab, area, config=VerifyConfig(outline_min_structure=1.0)) is None
    with pytest.raises(ValueError, match="outline_min_structure"):
        VerifyConfig(outline_min_structure=1.5)


def test_seeded_affine_finds_a_few_true_matches_among_many_wrong_ones() -> None:
    """6 matches that one mildly sheared map explains, hidden among 60 that agree with its rotation and scale
    (what the Hough filter leaves): every match proposes a map, so the 6 are found, every time."""
    rng = np.random.default_rng(7)
    turn, scale = np.deg2rad(25.0), 0.7
    to_reference = np.array([[scale * np.cos(turn), -scale * np.sin(turn) * 1.1, 40.0],
                             [scale * np.sin(turn), scale * np.cos(turn) * 0.95, -10.0]])
    count, true = 66, 6
    photo = np.column_stack([rng.uniform(0, 300, (count, 2)), rng.uniform(3, 8, count), rng.uniform(0, 360, count)])
    reference = photo.copy()
    reference[:, :2] = photo[:, :2] @ to_reference[:, :2].T + to_reference[:, 2]
    reference[:true, :2] += rng.normal(0, 0.5, (true, 2))  # keypoint noise on the true ones
    reference[true:, :2] = rng.uniform(0, 250, (count - true, 2))  # the rest land anywhere on the pin
    reference[:, 2] = photo[:, 2] * scale * rng.uniform(0.85, 1.15, count)  # sizes and angles only roughly agree
    reference[:, 3] = (photo[:, 3] + 25.0 + rng.normal(0, 5, count)) % 360.0
    affine, agree = seeded_affine(photo.astype(np.float32), reference.astype(np.float32), threshold=4.0)
    assert agree.tolist() == [True] * true + [False] * (count - true)
    assert np.abs(affine - to_reference).max() < 0.05 * np.abs(to_reference).max()
    again, agree_again = seeded_affine(photo.astype(np.float32), reference.astype(np.float32), threshold=4.0)
    assert np.array_equal(again, affine) and np.array_equal(agree_again, agree)  # no random draws
    nothing, none = seeded_affine(photo[:2].astype(np.float32), reference[:2].astype(np.float32), threshold=4.0)
    assert nothing is None and not none.any()  # two matches fix no affine map


def test_the_affine_fits_made_all_at_once_are_the_least_squares_fits_even_on_a_line() -> None:
    """``seeded_affine`` refines its proposals together by their normal equations; each map must be the one
    ``lstsq`` fits to its subset, including subsets with repeated points or all on one line (no single map:
    ``lstsq``'s smallest)."""
    from pinid.local.verify import _affine_fits

    rng = np.random.default_rng(3)
    photo = rng.uniform(0, 800, (40, 2))
    photo[5:9] = photo[4]  # one keypoint found at several orientations
    photo[20:30, 1] = 0.5 * photo[20:30, 0] + 7.0  # ten on a line
    reference = photo @ np.array([[0.8, -0.3], [0.25, 1.1]]).T + [30.0, -12.0] + rng.normal(0, 2.0, (40, 2))
    subsets = rng.random((60, 40)) < 0.3
    subsets[0] = False
    subsets[0, 20:30] = True  # the line alone
    subsets[1] = False
    subsets[1, [4, 5, 6, 7, 8, 12]] = True  # one point five times and another: a line too
    fitted = _affine_fits(photo, reference, subsets)
    for subset, affine in zip(subsets, fitted):
        solution, *_ = np.linalg.lstsq(np.c_[photo[subset], np.ones(int(subset.sum()))], reference[subset], rcond=None)
        assert np.allclose(affine, solution.T, rtol=1e-6, atol=1e-6)


def test_verify_config_is_obeyed() -> None:
    """The same photo and reference that align by default do not under a stricter ``VerifyConfig``."""
    reference = pin(3)
    entry = reference_entry(reference)
    photo = place(background(), reference, PERSPECTIVE)
    features = query_features(Image.fromarray(photo))
    lab = cv2.cvtColor(photo, cv2.COLOR_RGB2LAB)
    aligned = verify(features, lab, [(0, entry)])[0]
    assert aligned.aligned
    # (more inliers than matches: the affine fit may keep more inliers than the refined homography reports)
    for strict in (VerifyConfig(min_inliers=aligned.matches + 1, similarity_min_inliers=aligned.matches + 1),
                   VerifyConfig(min_matches=aligned.matches + 1),
                   VerifyConfig(min_pin_area_px=float(photo.shape[0] * photo.shape[1]))):
        result = verify(features, lab, [(0, entry)], config=strict)[0]
        assert not result.aligned and np.isnan(result.colour_distance), strict
    fewer = verify(features, lab, [(0, entry)], config=VerifyConfig(ratio_test_max=0.5))[0]
    assert fewer.matches < aligned.matches


def test_inverted_matches_align_a_pin_whose_light_and_dark_are_swapped() -> None:
    """A raised metal line turns from dark to light between a studio shot and a photo: by default the photo
    keypoints' inverted twins are matched too (``match_inverted``), and a photo with light and dark swapped
    throughout aligns on far more of the pin; the inliers still name the photo's own keypoints."""
    from pinid.local.features import query_feature_pair

    entry = reference_entry(pin(3))
    photo = 255 - place(background(), pin(3), PERSPECTIVE)
    lab = cv2.cvtColor(photo, cv2.COLOR_RGB2LAB)
    features, _ = query_feature_pair(Image.fromarray(photo), mirrored=False, inverted=True)
    assert features.inverted is not None and features.inverted.shape == features.descriptors.shape
    plain = verify(features, lab, [(0, entry)], config=VerifyConfig(match_inverted=0))[0]
    every = verify(features, lab, [(0, entry)], config=VerifyConfig(match_inverted=len(features)))[0]
    assert not plain.aligned
    assert every.aligned and every.distinct_inliers >= 10
    assert every.query_inliers.max() < len(features) and len(np.unique(every.query_inliers)) == len(every.query_inliers)
    corners = entry.outline.reshape(-1, 1, 2)
    expected = cv2.perspectiveTransform(corners, PERSPECTIVE).reshape(-1, 2)
    assert np.abs(every.polygon - expected).max() < 6.0
    # by default the twins of the strongest half of a photo's keypoints (this busy backdrop holds many of the
    # rest), which still align it; the twins of a few only do not
    default = verify(features, lab, [(0, entry)])[0]
    assert default.aligned and default.distinct_inliers <= every.distinct_inliers
    assert not verify(features, lab, [(0, entry)], config=VerifyConfig(match_inverted=20))[0].aligned
    # photo features made without their inverted codes verify as before, whatever the setting
    bare = query_features(Image.fromarray(photo))
    assert bare.inverted is None
    assert verify(bare, lab, [(0, entry)])[0].distinct_inliers == plain.distinct_inliers


def test_many_candidates_verified_together_get_what_each_gets_alone() -> None:
    """Past a few candidates the photo's matches are searched chunk by chunk on a worker thread, ahead of the
    geometry: each candidate must still get its own matches, in the candidates' order."""
    from pinid.local.features import query_feature_pair
    from pinid.local.verify import _MATCH_CHUNK

    photo = 255 - place(background(), pin(3), PERSPECTIVE)
    lab = cv2.cvtColor(photo, cv2.COLOR_RGB2LAB)
    features, _ = query_feature_pair(Image.fromarray(photo), mirrored=False, inverted=True)
    entries = {seed: reference_entry(pin(seed)) for seed in (3, 4, 5, 6)}
    order = [4, 5, 6, 4, 5, 6, 5, 4, 6, 3, 5, 4, 6, 4, 3, 6, 5, 4, 5, 6, 3]
    assert len(order) > 2 * _MATCH_CHUNK
    together = verify(features, lab, [(i, entries[seed]) for i, seed in enumerate(order)])
    alone = {seed: verify(features, lab, [(0, entries[seed])])[0] for seed in entries}
    assert [v.image_id for v in together] == list(range(len(order)))
    assert alone[3].aligned and not all(v.aligned for v in alone.values())  # both kinds among them
    for v, seed in zip(together, order):
        assert v.aligned == alone[seed].aligned and v.matches == alone[seed].matches
        assert v.distinct_inliers == alone[seed].distinct_inliers
        if v.aligned:
            np.testing.assert_allclose(v.homography, alone[seed].homography)


def test_unrelated_reference_does_not_align() -> None:
    photo = place(background(), pin(3), PERSPECTIVE)
    features = query_features(Image.fromarray(photo))
    result = verify(features, cv2.cvtColor(photo, cv2.COLOR_RGB2LAB), [(1, reference_entry(pin(4)))])[0]
    assert not result.aligned and result.distinct_inliers == 0 and np.isnan(result.colour_distance)


def _keypoint_pairs(turns: np.ndarray, scale_change: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    count = len(turns)
    reference = np.column_stack([rng.uniform(0, 100, (count, 2)), rng.uniform(2, 6, count), rng.uniform(0, 360, count)])
    photo = reference.copy()
    photo[:, 2] *= scale_change
    photo[:, 3] = (reference[:, 3] + turns) % 360.0
    return reference, photo


def test_hough_filter_keeps_a_consistent_group_whatever_its_rotation() -> None:
    # few matches that agree on a turn of about 120 degrees: the bins are fixed 30-degree bins over the
    # circle, not spread over the range of the data (which once put the peak's centre far off them)
    for turn in (5.0, 120.0, 200.0, 355.0):
        turns = turn + np.linspace(-15, 15, 12)
        reference, photo = _keypoint_pairs(turns, 1.3)
        assert hough_filter(reference, photo).all(), turn


def test_hough_filter_drops_matches_that_disagree_with_the_group() -> None:
    rng = np.random.default_rng(4)
    turns = np.concatenate([77.0 + rng.normal(0, 5, 30), [200.0, 260.0, 300.0, 20.0]])
    reference, photo = _keypoint_pairs(turns, 0.7)
    photo[30:, 2] = reference[30:, 2] * 8.0  # ... and the wrong scale as well as the wrong turn
    kept = hough_filter(reference, photo)
    assert kept[:30].all() and not kept[30:].any()


def _lab_of(rgb: list[tuple[int, int, int]]) -> np.ndarray:
    return cv2.cvtColor(np.array([rgb], np.uint8), cv2.COLOR_RGB2LAB)[0].astype(np.float64)


def _lit(rgb: list[tuple[int, int, int]], gains: tuple[float, float, float]) -> np.ndarray:
    """The colours as a camera sees them under a light that scales each linear channel by ``gains``."""
    linear = (np.array(rgb, np.float64) / 255.0) ** 2.2 * np.array(gains)
    return _lab_of([tuple(int(v) for v in row) for row in np.round(np.clip(linear, 0, 1) ** (1 / 2.2) * 255)])


ENAMEL = [(200, 40, 40), (40, 90, 190), (235, 200, 60), (60, 150, 80)]  # red, blue, yellow, green fields
AREAS = np.array([4.0, 3.0, 2.0, 1.0])


def test_balancing_takes_out_the_exposure_and_a_mild_tint() -> None:
    reference = _lab_of(ENAMEL)
    photo = _lit(ENAMEL, (0.55 * 1.15, 0.55, 0.55 / 1.15))  # a stop darker, warm light
    before = np.linalg.norm(photo - reference, axis=1).mean()
    after = np.linalg.norm(balance_illumination(photo, reference, AREAS, max_tint=1.35) - reference, axis=1).mean()
    assert before > 20 and after < 3, (before, after)
    # brightness only (no tint allowed): the exposure goes, the warm cast stays
    darker = np.linalg.norm(balance_illumination(photo, reference, AREAS, max_tint=1.0) - reference, axis=1).mean()
    assert after < darker < before


def test_balancing_does_not_turn_one_colourway_into_another() -> None:
    # the same fields in other hues, brighter: the light may explain the brightness, not the hues
    other = [(40, 90, 190), (200, 40, 40), (60, 150, 80), (235, 200, 60)]
    reference = _lab_of(ENAMEL)
    balanced = balance_illumination(_lit(other, (1.6, 1.6, 1.6)), reference, AREAS, max_tint=1.35)
    assert np.linalg.norm(balanced - reference, axis=1).min() > 30
    # one field that truly differs does not pull the light: the other three come back, it stays off
    one_off = ENAMEL[:3] + [(200, 60, 200)]
    balanced = balance_illumination(_lit(one_off, (0.6, 0.6, 0.6)), reference, AREAS, max_tint=1.35)
    distances = np.linalg.norm(balanced - reference, axis=1)
    assert distances[:3].max() < 8 and distances[3] > 40, distances  # (8-bit rounding of dark channels)


def test_reference_entry_is_compact_and_finds_the_pin_box() -> None:
    most = FeatureConfig().max_reference_features
    # the most a reference image can take on disk: codes, float16 keypoints, thumbnail, geometry row
    assert most * (DESCRIPTOR_DIMS + 4 * 2) + THUMBNAIL_SIDE ** 2 * 4 + 6 * 4 <= 64 * 1024
    busy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3)).astype(np.uint8))
    assert 0.95 * most <= len(reference_entry(busy).features) <= most  # capped
    entry = reference_entry(pin(5))
    features = entry.features
    assert 50 <= len(features) <= most
    assert features.descriptors.shape[1] == DESCRIPTOR_DIMS and features.descriptors.dtype == np.uint8
    assert entry.colour.shape == (THUMBNAIL_SIDE, THUMBNAIL_SIDE, 4)
    x0, y0, x1, y1 = entry.pin_box
    assert abs(x0 - 24) <= 2 and abs(y0 - 24) <= 2 and abs(x1 - (SIDE - 24)) <= 2 and abs(y1 - (SIDE - 24)) <= 2


def test_descriptor_codes_keep_nearest_neighbours() -> None:
    """The PCA codes must rank neighbours as full RootSIFT does (they are what every match compares)."""
    from pinid.local.features import _sift, root_sift

    grey = np.asarray(pin(7).convert("L"))
    _, _, raw, _ = _sift(grey)
    codes = encode_descriptors(raw).astype(np.float32)
    full = root_sift(raw)
    assert codes.shape == (len(raw), DESCRIPTOR_DIMS) and len(raw) > 40
    agree = 0
    for row in range(len(raw)):
        nearest_full = np.argsort(((full - full[row]) ** 2).sum(1))[1]
        nearest_code = np.argsort(((codes - codes[row]) ** 2).sum(1))[1]
        agree += nearest_full == nearest_code
    assert agree / len(raw) > 0.8


def test_feature_extraction_survives_odd_images() -> None:
    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    assert len(reference_entry(blank).features) == 0
    assert len(query_features(blank)) == 0
    tiny = Image.new("RGB", (1, 1), (0, 0, 0))
    assert len(query_features(tiny)) == 0 and reference_entry(tiny).pin_box == (0.0, 0.0, 1.0, 1.0)


# ---------------------------------------------------------------- whole index
@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> PinIndex:
    """A local-features-only index of 8 pins; pin-002's colourway pin-002-teal differs only in colour."""
    root = tmp_path_factory.mktemp("catalogue")
    for seed in range(8):
        (root / f"pin-{seed:03d}").mkdir()
        pin(seed).save(root / f"pin-{seed:03d}" / "front.png")
        (root / f"pin-{seed:03d}" / "pin.json").write_text(json.dumps({"name": f"Pin {seed}",
                                                                        "design": f"d{seed}"}))
    (root / "pin-002-teal").mkdir()
    recolour(pin(2), 150).save(root / "pin-002-teal" / "front.png")
    (root / "pin-002-teal" / "pin.json").write_text(json.dumps({"name": "Pin 2 (teal)", "design": "d2"}))
    (root / "pin-003-neon").mkdir()
    recolour_hsv(pin(3), 150).save(root / "pin-003-neon" / "front.png")
    (root / "pin-003-neon" / "pin.json").write_text(json.dumps({"name": "Pin 3 (neon)", "design": "d3"}))
    return PinIndex.build(read_catalogue(root), tmp_path_factory.mktemp("idx") / "idx", None)


def test_local_only_index_needs_no_model_and_has_no_vectors(local_index: PinIndex) -> None:
    assert local_index.encoder is None and not local_index.has_vectors
    assert local_index.manifest.encoder is None and not (local_index.path / "vectors.faiss").exists()
    assert local_index.manifest.descriptors > 8 * 50
    reloaded = PinIndex.load(local_index.path)
    assert reloaded.encoder is None
    with pytest.raises(PinidError, match="local features only"):
        reloaded.search(np.zeros((1, 8), np.float32))


def test_photo_of_a_catalogue_pin_is_identified_with_confidence(local_index: PinIndex) -> None:
    photo = Image.fromarray(place(background(), pin(6), PERSPECTIVE))
    answer = local_index.identify(photo, k=3)
    assert answer.matches[0].pin_id == "pin-006"
    assert not answer.unknown and answer.confidence is not None and answer.confidence > 0.9
    # (8 where the photo keeps its 1,000 strongest keypoints, spread over it: the busy backdrop takes most)
    assert answer.matches[0].inliers >= 8 and answer.matches[0].polygon is not None


def test_recoloured_variant_is_told_apart(local_index: PinIndex) -> None:
    for reference, expected in ((recolour(pin(2), 150), "pin-002-teal"), (pin(2), "pin-002")):
        photo = Image.fromarray(place(background(seed=7), reference, PERSPECTIVE))
        matches = local_index.identify(photo, k=3).matches
        assert matches[0].pin_id == expected
        # both colourways align; colour decides (a weak chance alignment of another pin, tried mirrored, may rank
        # between them: the sibling's colour is far off)
        sibling = next(m for m in matches[1:] if m.pin_id in {"pin-002", "pin-002-teal"})
        assert sibling.colour_distance is not None and matches[0].colour_distance + 10 < sibling.colour_distance


def test_colourway_that_fails_geometry_on_its_own_is_still_compared_by_colour(local_index: PinIndex) -> None:
    # an HSV hue rotation changes lightness too: the photo of one colourway shares few keypoints
    # with the other's shot, so the other is aligned through its sibling and judged by colour alone
    for reference, expected, other in ((pin(3), "pin-003", "pin-003-neon"),
                                       (recolour_hsv(pin(3), 150), "pin-003-neon", "pin-003")):
        photo = Image.fromarray(place(background(seed=11), reference, PERSPECTIVE))
        matches = {m.pin_id: m for m in local_index.identify(photo, k=4).matches}
        assert next(iter(matches)) == expected
        assert matches[other].colour_distance is not None
        assert matches[expected].colour_distance + 10 < matches[other].colour_distance


def test_unrelated_photo_is_unknown_but_lists_candidates(local_index: PinIndex) -> None:
    photo = Image.fromarray(place(background(seed=3), pin(40), PERSPECTIVE))
    answer = local_index.identify(photo, k=3)
    assert answer.unknown and answer.confidence is not None and answer.confidence < 0.5
    assert len(answer.matches) == 3


def test_two_pins_in_one_photo_are_both_found(local_index: PinIndex) -> None:
    left = np.array([[0.7, -0.2, 40.0], [0.2, 0.7, 80.0], [0.0, 0.0, 1.0]])
    right = np.array([[0.75, 0.1, 420.0], [-0.1, 0.8, 200.0], [0.0002, 0.0, 1.0]])
    photo = place(place(background(960, 600), pin(1), left), pin(5), right)
    found = local_index.identify_multi(Image.fromarray(photo))
    by_pin = {f.match.pin_id: f for f in found}
    assert set(by_pin) == {"pin-001", "pin-005"}
    for pin_id, transform in (("pin-001", left), ("pin-005", right)):
        outline = np.float32([[24, 24], [SIDE - 24, 24], [SIDE - 24, SIDE - 24], [24, SIDE - 24]])
        truth = cv2.perspectiveTransform(outline.reshape(-1, 1, 2), transform).reshape(-1, 2)
        assert polygon_iou(by_pin[pin_id].polygon, truth) > 0.8
        assert by_pin[pin_id].confidence >= local_index.calibration.unknown_below


def test_damaged_local_features_are_refused(local_index: PinIndex, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(local_index.path, copy)
    descriptors = copy / "local" / "000000" / "descriptors.npy"
    descriptors.write_bytes(descriptors.read_bytes()[:-4096])
    with pytest.raises(IndexFormatError, match="local features"):
        PinIndex.load(copy)
    shutil.rmtree(copy)
    shutil.copytree(local_index.path, copy)
    (copy / "local" / "000000" / "vocabulary.faiss").write_bytes(b"not faiss")
    with pytest.raises(IndexFormatError, match="rebuild"):
        PinIndex.load(copy)


def test_pickled_arrays_are_not_loaded(local_index: PinIndex, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(local_index.path, copy)
    np.save(copy / "local" / "000000" / "images.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(IndexFormatError, match="local features"):
        PinIndex.load(copy)


# ---------------------------------------------------------------- calibration
def test_shipped_calibration_loads_and_orders_sensibly() -> None:
    calibration = default_calibration()
    assert 0 < calibration.unknown_below < 1 and calibration.fitted_on
    weak, strong = calibration.answer_confidence(-3.0, 0.5), calibration.answer_confidence(3.0, 5.0)
    assert 0.0 <= weak < strong <= 1.0


def test_damaged_calibration_is_a_format_error() -> None:
    data = default_calibration().to_dict()
    data["ranking"] = data["ranking"][:2]
    with pytest.raises(IndexFormatError, match="calibration"):
        Calibration.from_dict(data)
    with pytest.raises(IndexFormatError, match="calibration"):
        Calibration.from_dict({"version": 99})


def test_logistic_fit_recovers_a_known_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    y = rng.random(4000) < 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))
    bias, w0, w1 = fit_logistic(x, y)
    assert abs(bias - 0.5) < 0.2 and abs(w0 - 2.0) < 0.25 and abs(w1 + 1.0) < 0.2


def test_calibration_written_before_the_rename_still_loads() -> None:
    legacy = {**default_calibration().to_dict(), "threshold": 0.42}
    del legacy["unknown_below"]
    assert Calibration.from_dict(legacy).unknown_below == 0.42
    with pytest.raises(IndexFormatError):
        Calibration.from_dict({**default_calibration().to_dict(), "unknown_below": 1.5})


def test_inliers_in_one_band_keep_the_affine_outline(tmp_path: Path) -> None:
    """examples/photo.jpg: every inlier lies in one band across the heart. A homography fitted to them
    left its perspective free and swung one corner off the photo; the affine keeps the outline on the pin."""
    from pinid.local.verify import _spread

    line = np.array([[0, 0], [10, 10], [20, 20], [30, 30]], np.float32)
    box = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], np.float32)
    assert _spread(line, box) == 0.0 and _spread(box, box) == pytest.approx(1.0)
    assert _spread(np.array([[0, 0], [50, 0], [50, 10]], np.float32), box) == pytest.approx(0.025)
    root = Path(__file__).resolve().parents[2] / "examples"
    index = PinIndex.build(read_catalogue(root / "catalogue"), tmp_path / "index", None)
    answer = index.identify(root / "photo.jpg")
    polygon = np.asarray(answer.matches[0].polygon)
    assert answer.matches[0].pin_id == "heart-gold"
    assert polygon.min() >= 0 and (polygon[:, 0] <= 640).all() and (polygon[:, 1] <= 480).all()
    # the pin (measured on the photo: an ellipse centred near (368, 222)) lies inside the outline
    assert cv2.pointPolygonTest(polygon.astype(np.float32), (368.0, 222.0), False) > 0
    sides = np.linalg.norm(polygon - np.roll(polygon, 1, axis=0), axis=1)
    assert sides.max() / sides.min() < 1.5  # a square pin box stays near square under a mild tilt
