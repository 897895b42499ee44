"""Helpers shared by the tests: tiny model configs, generated pin images, photos of them, CLI runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from pinid.cli import main

TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    # vocab_size: every id open_clip's tokenizer gives, so that the text tower can search (text search tests)
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


OTHER_MODEL_CFG = {**TINY_MODEL_CFG, "vision_cfg": {**TINY_MODEL_CFG["vision_cfg"], "layers": 3}}


def draw_pin_image(seed: int, size: int = 128) -> Image.Image:
    """A distinct, deterministic 'pin': random enamel shapes on a random ground."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, size * 3 // 4, 2))
        x1, y1 = x0 + int(rng.integers(8, size // 2)), y0 + int(rng.integers(8, size // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour, outline=(200, 170, 60), width=3)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour, outline=(200, 170, 60), width=3)
    return image


def corrupt_files(folder: Path) -> list[Path]:
    """Three kinds of broken file: truncated JPEG, random bytes, text pretending to be PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    truncated = folder / "truncated.jpg"
    draw_pin_image(999).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[: os.path.getsize(truncated) // 3])
    garbage = folder / "garbage.jpg"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    text = folder / "notes.png"
    text.write_text("this is not an image\n")
    return [truncated, garbage, text]


SIDE = 256


def pin(seed: int) -> Image.Image:
    """A product shot: a generated pin on a plain light backdrop with a margin."""
    art = draw_pin_image(seed, size=SIDE - 48)
    shot = Image.new("RGB", (SIDE, SIDE), (236, 236, 232))
    shot.paste(art, (24, 24))
    return shot


def recolour(image: Image.Image, degrees: float) -> Image.Image:
    """The same design in another colourway: hues rotated at equal lightness (the hard case: the grey
    image, and so every keypoint, stays the same), the backdrop kept."""
    lab = cv2.cvtColor(np.asarray(image).astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    angle = np.deg2rad(degrees)
    a, b = lab[..., 1].copy(), lab[..., 2].copy()
    lab[..., 1], lab[..., 2] = a * np.cos(angle) - b * np.sin(angle), a * np.sin(angle) + b * np.cos(angle)
    out = (np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0, 1) * 255).round().astype(np.uint8)
    out[:24] = out[-24:] = out[:, :24] = out[:, -24:] = (236, 236, 232)
    return Image.fromarray(out)


def recolour_hsv(image: Image.Image, degrees: float) -> Image.Image:
    """A colourway made by rotating hues in HSV: lightness changes too, so keypoints differ."""
    hsv = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2HSV_FULL).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + round(degrees * 256 / 360)) % 256
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)
    out[:24] = out[-24:] = out[:, :24] = out[:, -24:] = (236, 236, 232)
    return Image.fromarray(out)


def background(width: int = 720, height: int = 540, seed: int = 99) -> np.ndarray:
    """A blurred random texture, so photos have keypoints that belong to no pin."""
    noise = np.random.default_rng(seed).integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, (width, height), interpolation=cv2.INTER_NEAREST), (0, 0), 2)


def plain_pin(corners: list[tuple[int, int]], colour: tuple[int, int, int] = (200, 40, 50)
              ) -> tuple[Image.Image, np.ndarray]:
    """A product shot of a plain pin (one enamel field in a dark metal rim, the polygon ``corners`` in a
    SIDE-pixel shot) and the mask of the pin: what keypoints find little on but its outline tells."""
    shot = np.full((SIDE, SIDE, 3), (236, 236, 232), np.uint8)
    outline = np.int32(corners).reshape(-1, 1, 2)
    cv2.fillPoly(shot, [outline], colour)
    cv2.polylines(shot, [outline], True, (70, 70, 74), 5, cv2.LINE_AA)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    cv2.fillPoly(mask, [outline], 255)
    cv2.polylines(mask, [outline], True, 255, 5)
    return Image.fromarray(shot), mask


#: corners of an asymmetric plain pin (a flag on a pole), and of a plain pin of another outline (a kite)
FLAG = [(60, 40), (200, 40), (160, 100), (200, 160), (90, 160), (90, 220), (60, 220)]
KITE = [(128, 30), (210, 110), (128, 226), (46, 110)]


def place(canvas: np.ndarray, image: Image.Image, homography: np.ndarray, mask: np.ndarray | None = None
          ) -> np.ndarray:
    """Warp a product shot's pin area (``mask``; default: all but the backdrop's margin) onto a photo."""
    source = np.asarray(image)
    if mask is None:
        mask = np.zeros(source.shape[:2], np.uint8)
        mask[24:-24, 24:-24] = 255
    size = (canvas.shape[1], canvas.shape[0])
    warped = cv2.warpPerspective(source, homography, size, flags=cv2.INTER_LINEAR)
    keep = cv2.warpPerspective(mask, homography, size, flags=cv2.INTER_NEAREST) > 0
    out = canvas.copy()
    out[keep] = warped[keep]
    return out


PERSPECTIVE = np.array([[0.95, 0.25, 180.0], [-0.18, 0.9, 120.0], [0.0004, 0.0002, 1.0]])


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class CountingEncoder:
    """Wraps an encoder, counting the images it is asked to encode; can fail after ``fail_after`` calls."""

    def __init__(self, encoder: Any, fail_after: int | None = None) -> None:
        self._encoder, self.calls, self.images, self.fail_after = encoder, 0, 0, fail_after
        self.image_size = encoder.image_size

    def identity(self) -> dict[str, Any]:
        return self._encoder.identity()

    def encode_images(self, sources, **kwargs):  # noqa: ANN001, ANN003 - same signature as Encoder's
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.images += len(sources)
        return self._encoder.encode_images(sources, **kwargs)



def write_catalogue(root: Path, pins: int = 2) -> Path:
    """A folder catalogue of ``pins`` generated pins, one image each (``pin-0/a.png``, ...)."""
    for p in range(pins):
        (root / f"pin-{p}").mkdir(parents=True, exist_ok=True)
        draw_pin_image(p).save(root / f"pin-{p}" / "a.png")
    return root
