from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pinid.errors import ImageError
from pinid.images import load_image

from tests.support import corrupt_files, draw_pin_image


def _save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def test_rgb_jpeg_loads_unchanged_in_size(tmp_path: Path) -> None:
    path = _save(draw_pin_image(1), tmp_path / "a.jpg", quality=95)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (128, 128)


def test_bytes_and_pil_inputs_give_same_pixels(tmp_path: Path) -> None:
    path = _save(draw_pin_image(2), tmp_path / "a.png")
    from_path = np.asarray(load_image(path))
    assert np.array_equal(from_path, np.asarray(load_image(path.read_bytes())))
    assert np.array_equal(from_path, np.asarray(load_image(Image.open(path))))


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 5, 10))
    path = _save(image, tmp_path / "p.png", transparency=0)
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (10, 10, 3)
    assert tuple(pixels[0, 0]) == (0, 0, 255)  # opaque palette colour kept
    assert tuple(pixels[0, 9]) == (255, 255, 255)  # transparent index -> white, not red


def test_rgba_alpha_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 255, 0, 255))
    pixels = np.asarray(load_image(_save(image, tmp_path / "a.png")))
    assert tuple(pixels[0, 0]) == (0, 255, 0)
    assert tuple(pixels[3, 3]) == (255, 255, 255)


def test_greyscale_with_alpha_and_one_bit(tmp_path: Path) -> None:
    la = Image.new("LA", (3, 3), (10, 255))
    assert tuple(np.asarray(load_image(_save(la, tmp_path / "la.png")))[1, 1]) == (10, 10, 10)
    bilevel = Image.new("1", (3, 3), 1)
    assert tuple(np.asarray(load_image(_save(bilevel, tmp_path / "b.png")))[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    pixels = np.asarray(load_image(_save(image, tmp_path / "c.jpg", quality=95)))
    red, green, blue = pixels[4, 4].astype(int)
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(load_image(path))[0, :, 0]
    assert list(pixels) == [0, 128, 255]


def test_float_image_in_unit_range(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    pixels = np.asarray(load_image(image))[0, :, 0]
    assert list(pixels) == [0, 128, 255]


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), (255, 0, 0)), Image.new("RGB", (6, 6), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = Image.open(path)
    image.seek(1)  # a caller left it on a later frame
    red, green, blue = np.asarray(load_image(image))[3, 3].astype(int)
    assert red > 200 and blue < 50


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(image, tmp_path / "rot.jpg", exif=exif, quality=95)
    upright = load_image(path)
    assert upright.size == (20, 40)
    pixels = np.asarray(upright).mean(axis=2)
    assert pixels[5, 10] > 200 and pixels[35, 10] < 50  # white half now on top


def test_large_jpeg_decodes_reduced_but_not_below_min_side(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (2400, 1600), (90, 120, 30)), tmp_path / "big.jpg", quality=90)
    image = load_image(path, min_side=256)
    assert min(image.size) >= 256 and image.size[0] < 2400
    assert load_image(path).size == (2400, 1600)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_corrupt_files_raise_one_line_image_error(tmp_path: Path, index: int) -> None:
    bad = corrupt_files(tmp_path)[index]
    with pytest.raises(ImageError) as caught:
        load_image(bad)
    assert str(bad) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_and_directory_raise_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_decompression_bomb_guard_stays_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (300, 300)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 90,000 px is > 2x the limit
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(path)


def test_garbage_bytes_raise_image_error() -> None:
    with pytest.raises(ImageError):
        load_image(io.BytesIO(b"\x00" * 10).getvalue())
