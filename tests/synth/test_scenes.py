"""Collector photos: the optional frame size changes the frame only, never the benchmark's draws."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pinid.synth.reference import material_from_image
from pinid.synth.scenes import QueryOptions, query_photo
from tests.support import draw_pin_image


def _material():
    return material_from_image(np.asarray(draw_pin_image(3, 96)), size=96)


def test_default_frame_is_the_benchmark_frame_with_the_same_draws() -> None:
    mat = _material()
    default, poly = query_photo(mat, np.random.default_rng(11))
    explicit, same_poly = query_photo(mat, np.random.default_rng(11), opts=QueryOptions(long_side=(640, 1024)))
    assert default == explicit and poly == same_poly
    assert 640 <= max(Image.open(io.BytesIO(default)).size) <= 1024


def test_long_side_sets_the_frame_size() -> None:
    mat = _material()
    for seed in range(4):
        data, _ = query_photo(mat, np.random.default_rng(seed), opts=QueryOptions(long_side=(160, 200)))
        w, h = Image.open(io.BytesIO(data)).size
        assert 160 <= max(w, h) <= 200
