"""Shared fixtures: a tiny open_clip model with random weights, saved as a real
``local-dir:`` checkpoint, and generated catalogues. Nothing here downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pinid.encoder import Encoder, save_local_dir

TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 128, "width": 32, "heads": 2, "layers": 1},
}
OTHER_MODEL_CFG = {**TINY_MODEL_CFG, "vision_cfg": {**TINY_MODEL_CFG["vision_cfg"], "layers": 3}}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never download: every weight lookup runs in offline mode."""
    monkeypatch.setenv("PINID_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_local_dir(tmp_path_factory.mktemp("tiny-model"), model_cfg=TINY_MODEL_CFG, random_weights=True)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_local_dir(tmp_path_factory.mktemp("other-model"), model_cfg=OTHER_MODEL_CFG, random_weights=True)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(f"local-dir:{tiny_model_dir}", device="cpu", offline=True)


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


MakeCatalogue = Callable[..., Path]


@pytest.fixture
def make_catalogue(tmp_path: Path) -> MakeCatalogue:
    """Build a folder catalogue: ``pins`` pins with ``images_per_pin`` images each."""

    def make(pins: int = 4, images_per_pin: int = 1, root: Path | None = None, seed: int = 0) -> Path:
        root = root or tmp_path / "catalogue"
        for p in range(pins):
            folder = root / f"pin-{p:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "pin.json").write_text(json.dumps({"name": f"Pin number {p}", "series": "test"}))
            for i in range(images_per_pin):
                draw_pin_image(seed * 100_000 + p * 100 + i).save(folder / f"img{i}.png")
        return root

    return make


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
