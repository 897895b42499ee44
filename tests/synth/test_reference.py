"""A pin material made from a finished image (self-calibration turns catalogue shots into pins)."""

from __future__ import annotations

import numpy as np
import pytest

from pinid.synth.reference import material_from_image


def _shot() -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 60 light backdrop with a red 20 x 10 pin; and the pin's mask."""
    image = np.full((40, 60, 3), 230, np.uint8)
    image[10:30, 20:30] = (200, 20, 20)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:30] = 1
    return image, mask


def _check(material, size: int) -> None:
    assert material.size == size and material.albedo.shape == (size, size, 3)
    assert material.normal.shape == (size, size, 3) and material.metal.shape == (size, size)
    for array in (material.albedo, material.alpha, material.normal, material.metal):
        assert array.dtype == np.float32 and np.isfinite(array).all()
    assert np.allclose(np.linalg.norm(material.normal, axis=2), 1.0, atol=1e-4)


def test_the_mask_cuts_the_pin_out_of_its_backdrop() -> None:
    image, mask = _shot()
    material = material_from_image(image, mask, size=64)
    _check(material, 64)
    centre = material.albedo[32, 32]
    assert np.allclose(centre, np.array([200, 20, 20]) / 255, atol=0.02)  # the pin's colour, as shown
    covered = material.alpha > 0.5
    ys, xs = np.nonzero(covered)
    assert (ys.max() - ys.min()) > 1.7 * (xs.max() - xs.min())  # the 2:1 pin, not the 2:3 backdrop
    assert not covered[:, :8].any() and not covered[:3].any()  # a margin for the rim and its shadow


@pytest.mark.parametrize("mask", ["none", "empty"])
def test_without_a_usable_mask_the_whole_image_is_the_pin(mask: str) -> None:
    image, _ = _shot()
    given = None if mask == "none" else np.zeros(image.shape[:2], np.uint8)
    material = material_from_image(image, given, size=64)
    _check(material, 64)
    ys, xs = np.nonzero(material.alpha > 0.5)
    assert (xs.max() - xs.min()) > 1.3 * (ys.max() - ys.min())  # the 3:2 backdrop is the pin
    assert np.allclose(material.albedo[32, 8], 230 / 255, atol=0.02)  # backdrop colour at the left


def test_a_tiny_image_still_makes_a_pin() -> None:
    material = material_from_image(np.full((2, 3, 3), 120, np.uint8), size=32)
    _check(material, 32)
    assert material.alpha.max() > 0.9


@pytest.mark.parametrize("shape", [(40, 60), (40, 60, 4), (40, 60, 1), (1, 60, 3), (40, 1, 3), (0, 0, 3), (3,)])
def test_an_image_that_is_not_h_w_3_is_a_value_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        material_from_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("shape", [(20, 30), (40, 61), (60, 40)])
def test_a_mask_of_another_shape_is_a_value_error(shape: tuple[int, int]) -> None:
    image, _ = _shot()
    with pytest.raises(ValueError, match="mask"):
        material_from_image(image, np.ones(shape, np.uint8))
