"""Shared fixtures: a tiny open_clip model with random weights, saved as a real
``local-dir:`` checkpoint, and generated catalogues. Nothing here downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from pinid.encoder import Encoder, save_local_dir

from .support import OTHER_MODEL_CFG, TINY_MODEL_CFG, draw_pin_image



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




@pytest.fixture
def umask_022() -> Iterator[None]:
    """Files are created under the common umask 022 (tests compare permission bits)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)
