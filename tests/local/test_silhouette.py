"""Outline alignment's geometry (pinid.local.silhouette): moment frames and the turn between two outlines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pinid.local.silhouette import POLAR_ANGLES, POLAR_RADII, OutlineBank, outline_maps, silhouette


def _asymmetric_mask() -> np.ndarray:
    """An L with a blob: no turn or mirror image of it is itself."""
    mask = np.zeros((48, 48), np.uint8)
    mask[6:42, 8:18] = 1
    mask[32:42, 8:36] = 1
    mask[10:16, 30:40] = 1
    return mask


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("degrees", [0, 37, 200])
def test_the_best_outline_map_is_the_affine_map_between_the_two_silhouettes(degrees: float, mirrored: bool) -> None:
    mask = _asymmetric_mask()
    to_reference = np.array([[2.0, 0.0, 100.0], [0.0, 1.5, 50.0], [0.0, 0.0, 1.0]])  # a 48-px thumbnail's pixels
    reference = silhouette(mask, to_reference)
    angle = np.deg2rad(degrees)
    linear = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array([[0.8, 0.2],
                                                                                                 [0.0, 0.6]])
    if mirrored:
        linear = linear @ np.diag([-1.0, 1.0])
    truth = np.vstack([np.c_[linear, [300.0, 250.0]], [0.0, 0.0, 1.0]])  # reference -> photo pixels, with shear
    photo_mask = cv2.warpAffine(mask, (truth @ to_reference)[:2], (700, 600), flags=cv2.INTER_NEAREST)
    photo = silhouette(photo_mask, np.eye(3))
    assert reference is not None and photo is not None
    assert reference.signature.shape == (POLAR_RADII, POLAR_ANGLES)
    found = outline_maps(photo, reference)
    assert len(found) == 4 and [dice for dice, _ in found] == sorted((dice for dice, _ in found), reverse=True)
    dice, best = found[0]
    assert dice > 0.9
    corners = np.array([[100.0, 50.0, 1.0], [196.0, 50.0, 1.0], [196.0, 122.0, 1.0], [100.0, 122.0, 1.0]])
    # within 4 px on a pin of about 80 px in the photo: the polar grid's 5-degree steps
    assert np.abs((corners @ best.T)[:, :2] - (corners @ truth.T)[:, :2]).max() < 4.0
    assert (np.linalg.det(best[:2, :2]) < 0) == mirrored


def test_too_small_a_mask_or_a_line_has_no_silhouette() -> None:
    tiny = np.zeros((20, 20), np.uint8)
    tiny[5:7, 5:8] = 1
    line = np.zeros((20, 20), np.uint8)
    line[10, 2:18] = 1
    assert silhouette(tiny, np.eye(3)) is None
    assert silhouette(line, np.eye(3)) is None
    assert silhouette(np.zeros((20, 20), np.uint8), np.eye(3)) is None


def _shapes() -> list[np.ndarray]:
    """Four outlines on 48-px thumbnails: the asymmetric L, a disc, a triangle, a five-pointed star."""
    disc, triangle, star = (np.zeros((48, 48), np.uint8) for _ in range(3))
    cv2.circle(disc, (24, 24), 18, 1, -1)
    cv2.fillPoly(triangle, [np.array([[24, 4], [44, 42], [4, 42]], np.int32)], 1)
    angles = np.deg2rad(np.arange(10) * 36.0 - 90.0)
    radii = np.where(np.arange(10) % 2, 8.0, 21.0)
    cv2.fillPoly(star, [np.c_[24 + radii * np.cos(angles), 25 + radii * np.sin(angles)].astype(np.int32)], 1)
    return [_asymmetric_mask(), disc, triangle, star]


@pytest.mark.parametrize("mirrored", [False, True])
def test_the_bank_overlaps_a_photo_with_every_outline_as_outline_maps_does_one_by_one(mirrored: bool) -> None:
    """One product of spectra for a whole catalogue; the mirrored spectrum is derived, not kept."""
    references = [silhouette(mask, np.diag([2.0, 1.5, 1.0])) for mask in _shapes()]
    bank = OutlineBank(np.stack([r.signature for r in references]))
    assert len(bank) == 4 and bank.spectra.shape == (4, POLAR_RADII, POLAR_ANGLES // 2 + 1)
    linear = np.array([[0.7, 0.25], [-0.3, 0.6]]) @ (np.diag([-1.0, 1.0]) if mirrored else np.eye(2))
    for truth, mask in enumerate(_shapes()):
        photo_mask = cv2.warpAffine(mask * 255, np.c_[linear * 4, [150.0, 120.0]], (400, 350)) > 127
        photo = silhouette(photo_mask, np.eye(3))
        found = bank.overlaps(photo)
        one_by_one = [outline_maps(photo, reference, peaks=POLAR_ANGLES)[0][0] for reference in references]
        assert np.allclose(found, one_by_one, atol=1e-4)
        assert int(np.argmax(found)) == truth and found[truth] > 0.9
    assert OutlineBank(np.zeros((0, POLAR_RADII, POLAR_ANGLES))).overlaps(photo).shape == (0,)
