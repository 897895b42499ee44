"""pinid.encoder.cache: opening, refusing and resetting the content-keyed embedding cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pinid.encoder.cache import EmbeddingCache
from pinid.errors import EncoderMismatchError, InputError
from pinid.phash import WINDOWS

from tests.support import draw_pin_image, run


def _filled(folder: Path, identity: dict[str, Any]) -> EmbeddingCache:
    cache = EmbeddingCache.open(folder, identity)
    cache.add_chunk([b"x" * 32], np.ones((1, 32), np.float32), np.zeros((1, WINDOWS), np.uint64))
    return cache


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cache_of_another_encoder_is_refused(tiny_encoder, other_model_dir: Path, tmp_path: Path) -> None:
    from pinid.encoder import Encoder

    other = Encoder.load(f"local-dir:{other_model_dir}", device="cpu", offline=True)
    _filled(tmp_path / "cache", tiny_encoder.identity())
    with pytest.raises(EncoderMismatchError, match="--reset-cache"):
        EmbeddingCache.open(tmp_path / "cache", other.identity())
    assert len(EmbeddingCache.open(tmp_path / "cache", other.identity(), reset=True)) == 0
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.jpg").write_bytes(b"not ours")
    with pytest.raises(InputError, match="not a pinid embedding cache"):
        EmbeddingCache.open(tmp_path / "photos", other.identity(), reset=True)
    assert (tmp_path / "photos" / "keep.jpg").exists()


DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "not JSON": lambda text: "this is not json",
    "not UTF-8": lambda text: b"\xff\xfe\x00garbage",
    "a list": lambda text: "[1, 2, 3]",
    "null": lambda text: "null",
    "empty": lambda text: "",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_reset_recovers_a_damaged_cache_json(damage: str, tmp_path: Path) -> None:
    identity = {"model": "stand-in", "embedding_dim": 32}
    folder = tmp_path / "cache"
    _filled(folder, identity)
    meta = folder / "cache.json"
    damaged = DAMAGE[damage](meta.read_text())
    meta.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
    with pytest.raises(InputError) as refused:
        EmbeddingCache.open(folder, identity)
    assert str(folder) in str(refused.value) and "--reset-cache" in str(refused.value)
    cache = EmbeddingCache.open(folder, identity, reset=True)
    assert len(cache) == 0 and not list(folder.glob("chunk-*"))
    assert json.loads(meta.read_text())["format"] == "pinid-embedding-cache"
    _filled(folder, identity)
    assert len(EmbeddingCache.open(folder, identity)) == 1  # whole again


def test_reset_recovers_a_damaged_cache_json_without_chunks(tmp_path: Path) -> None:
    identity = {"model": "stand-in", "embedding_dim": 32}
    folder = tmp_path / "cache"
    EmbeddingCache.open(folder, identity)
    meta = folder / "cache.json"
    meta.write_text(meta.read_text()[:40])  # truncated: still starts with pinid's format marker
    assert len(EmbeddingCache.open(folder, identity, reset=True)) == 0
    assert json.loads(meta.read_text())["format"] == "pinid-embedding-cache"


def test_reset_leaves_a_foreign_folder_with_a_damaged_cache_json_alone(tmp_path: Path) -> None:
    identity = {"model": "stand-in", "embedding_dim": 32}
    mixed = tmp_path / "mixed"  # a cache folder the user also put a photo in
    _filled(mixed, identity)
    (mixed / "cache.json").write_text("{ truncated")
    (mixed / "holiday.jpg").write_bytes(b"a photo")
    lone = tmp_path / "lone"  # another tool's damaged cache.json: nothing says it is pinid's
    lone.mkdir()
    (lone / "cache.json").write_text("{\"entries\": [1, 2")
    foreign = tmp_path / "foreign"  # another tool's valid cache.json, beside pinid-looking chunk names
    _filled(foreign, identity)
    (foreign / "cache.json").write_text('{"format": "someone-elses-cache"}')
    for folder in (mixed, lone, foreign):
        before = _snapshot(folder)
        with pytest.raises(InputError, match="pinid embedding cache") as refused:
            EmbeddingCache.open(folder, identity, reset=True)
        assert str(folder) in str(refused.value)
        assert _snapshot(folder) == before


def test_reset_discards_a_cache_of_another_format_version(tmp_path: Path) -> None:
    identity = {"model": "stand-in", "embedding_dim": 32}
    folder = tmp_path / "cache"
    _filled(folder, identity)
    meta = json.loads((folder / "cache.json").read_text())
    (folder / "cache.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(InputError, match="--reset-cache"):
        EmbeddingCache.open(folder, identity)
    assert len(EmbeddingCache.open(folder, identity, reset=True)) == 0
    assert json.loads((folder / "cache.json").read_text())["format_version"] == meta["format_version"]


def test_reset_keeps_foreign_files_beside_a_valid_cache(tmp_path: Path) -> None:
    identity = {"model": "stand-in", "embedding_dim": 32}
    folder = tmp_path / "cache"
    _filled(folder, identity)
    (folder / "notes.txt").write_text("mine")
    assert len(EmbeddingCache.open(folder, identity, reset=True)) == 0
    assert (folder / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------- CLI
def test_cli_reset_cache_recovers_a_damaged_cache_json(make_catalogue, tiny_model_dir: Path, tmp_path: Path,
                                                       capsys) -> None:
    """`build-index --cache` and `dedup --cache`: the error recommends --reset-cache, and it works."""
    catalogue = make_catalogue(pins=2, images_per_pin=1)
    model = ["--model", f"local-dir:{tiny_model_dir}"]
    listings = tmp_path / "listings"
    listings.mkdir()
    for seed in range(3):
        draw_pin_image(seed).save(listings / f"l{seed}.png")
    commands = {
        "build-index": ["build-index", catalogue, "-o", tmp_path / "idx", *model, "-q"],
        "dedup": ["dedup", listings, "-o", tmp_path / "groups.csv", *model, "-q"],
    }
    for name, args in commands.items():
        cache = tmp_path / f"cache-{name}"
        code, _, err = run(capsys, *args, "--cache", cache)
        assert code == 0, err
        assert list(cache.glob("chunk-*.keys.npy"))
        (cache / "cache.json").write_text((cache / "cache.json").read_text()[:25])  # a crash or a full disk
        code, _, err = run(capsys, *args, "--cache", cache)
        assert code == 2 and "--reset-cache" in err and str(cache) in err, (name, err)
        assert err.startswith("pinid: error:") and len(err.strip().splitlines()) == 1
        code, _, err = run(capsys, *args, "--cache", cache, "--reset-cache")
        assert code == 0, (name, err)
        assert json.loads((cache / "cache.json").read_text())["format"] == "pinid-embedding-cache"
        shutil.rmtree(cache)
