"""The content-keyed local-feature cache (pinid.local.cache)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pinid.errors import InputError, PinidError
from pinid.local import cache as cache_module
from pinid.local.cache import FeatureCache
from pinid.local.features import FeatureConfig, Features, ReferenceEntry, reference_entry
from tests.support import pin


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def fake_entry(n: int, keypoints: int | None = None) -> ReferenceEntry:
    rng = np.random.default_rng(n)
    count = int(rng.integers(0, 40)) if keypoints is None else keypoints
    features = Features(rng.normal(size=(count, 4)).astype(np.float32) * 100,
                        rng.integers(0, 256, size=(count, 64), dtype=np.uint8), 300 + n, 200 + n)
    box = (float(n), 1.5, 250.25 + n, 190.0)
    return ReferenceEntry(features, box, rng.integers(0, 256, size=(48, 48, 4), dtype=np.uint8))


def assert_same(got: ReferenceEntry | None, want: ReferenceEntry) -> None:
    assert got is not None
    for name in ("keypoints", "descriptors"):
        a, b = getattr(got.features, name), getattr(want.features, name)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert (got.features.width, got.features.height) == (want.features.width, want.features.height)
    assert type(got.features.width) is int and type(got.features.height) is int
    assert got.pin_box == want.pin_box and all(type(v) is float for v in got.pin_box)
    assert got.colour.dtype == want.colour.dtype and np.array_equal(got.colour, want.colour)


def chunk_files(root: Path) -> list[Path]:
    return sorted(root.glob("s-*/chunk-*.npy"))


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    real = reference_entry(pin(3))
    entries = {digest(0): real, digest(1): fake_entry(1, keypoints=0), digest(2): fake_entry(2)}
    with FeatureCache.open(tmp_path / "lf", FeatureConfig(), chunk_size=2) as cache:
        for key, entry in entries.items():
            cache.put(key, entry)
        assert len(cache) == 3 and digest(2) in cache  # the third is still buffered
        assert_same(cache.get(digest(2)), entries[digest(2)])
    with FeatureCache.open(tmp_path / "lf", FeatureConfig()) as cache:
        assert len(cache) == 3 and digest(9) not in cache and cache.get(digest(9)) is None
        for key, entry in entries.items():
            assert_same(cache.get(key), entry)


def test_other_settings_miss_and_keep_their_own(tmp_path: Path) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        cache.put(digest(0), fake_entry(0))
    other = FeatureConfig(max_reference_features=100)
    with FeatureCache.open(tmp_path, other) as cache:
        assert digest(0) not in cache and cache.get(digest(0)) is None
        cache.put(digest(0), fake_entry(5))
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        assert_same(cache.get(digest(0)), fake_entry(0))
    with FeatureCache.open(tmp_path, other) as cache:
        assert_same(cache.get(digest(0)), fake_entry(5))


def test_another_extraction_version_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        cache.put(digest(0), fake_entry(0))
    monkeypatch.setattr(cache_module, "EXTRACTION_VERSION", 999)
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        assert len(cache) == 0


def test_put_writes_a_chunk_every_chunk_size_entries(tmp_path: Path) -> None:
    cache = FeatureCache.open(tmp_path, FeatureConfig(), chunk_size=2)
    for n in range(5):
        cache.put(digest(n), fake_entry(n))
    # killed here, without close: the two whole chunks are on disk, the buffered fifth is lost
    reader = FeatureCache.open(tmp_path, FeatureConfig())
    assert not reader.writable  # the first is still alive and holds the writer lock
    assert [n for n in range(5) if digest(n) in reader] == [0, 1, 2, 3]
    reader.put(digest(7), fake_entry(7))  # a reader drops puts rather than race the writer
    reader.close()
    cache.close()
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        assert len(cache) == 5 and digest(7) not in cache


@pytest.mark.parametrize("damage", ["no keys", "truncated keys", "truncated descriptors", "truncated images",
                                    "wrong rows", "missing colour"])
def test_a_damaged_chunk_is_ignored(tmp_path: Path, damage: str) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig(), chunk_size=2) as cache:
        for n in range(4):
            cache.put(digest(n), fake_entry(n, keypoints=10))
    folder = next(tmp_path.glob("s-*"))
    stem = folder / "chunk-000002"
    if damage == "no keys":
        Path(f"{stem}.keys.npy").unlink()
        (folder / ".chunk-000003.keys.npy.abcdefgh.tmp").write_bytes(b"half")  # a killed atomic write
    elif damage == "wrong rows":
        images = np.load(f"{stem}.images.npy")
        images[1, 1] += 5
        np.save(f"{stem}.images.npy", images)
    elif damage == "missing colour":
        Path(f"{stem}.colour.npy").unlink()
    else:
        part = Path(f"{stem}.{damage.split()[1]}.npy")
        part.write_bytes(part.read_bytes()[:-7])
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        assert [n for n in range(4) if digest(n) in cache] == [0, 1]
        assert cache.get(digest(2)) is None
        assert_same(cache.get(digest(1)), fake_entry(1, keypoints=10))
        cache.put(digest(2), fake_entry(2, keypoints=10))  # re-extracted, written as a new chunk
    assert not list(folder.glob(".*.tmp"))  # the writer clears what a killed writer left
    if damage == "no keys":
        assert not list(folder.glob("chunk-000002.*"))  # keyless parts are never readable: removed
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        assert_same(cache.get(digest(2)), fake_entry(2, keypoints=10))


def test_a_chunk_damaged_after_open_is_a_miss(tmp_path: Path) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig(), chunk_size=1) as cache:
        cache.put(digest(0), fake_entry(0))
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        next(tmp_path.glob("s-*/chunk-*.descriptors.npy")).write_bytes(b"")
        assert cache.get(digest(0)) is None and digest(0) not in cache


@pytest.mark.parametrize("meta", [b"{not json", b"[1, 2]", b'{"format": "something else"}', b""])
def test_damaged_settings_file_is_a_clear_error_and_reset_recovers(tmp_path: Path, meta: bytes) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        cache.put(digest(0), fake_entry(0))
    next(tmp_path.glob("s-*/settings.json")).write_bytes(meta)
    with pytest.raises(InputError, match="damaged.*--reset-cache") as error:
        FeatureCache.open(tmp_path, FeatureConfig())
    assert isinstance(error.value, PinidError)
    with FeatureCache.open(tmp_path, FeatureConfig(), reset=True) as cache:
        assert len(cache) == 0
        cache.put(digest(1), fake_entry(1))
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        assert digest(1) in cache and digest(0) not in cache


def test_settings_file_of_other_settings_is_refused(tmp_path: Path) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig()):
        pass
    meta = next(tmp_path.glob("s-*/settings.json"))
    meta.write_text(meta.read_text().replace('"max_reference_features": 750', '"max_reference_features": 7'))
    with pytest.raises(InputError, match="does not describe"):
        FeatureCache.open(tmp_path, FeatureConfig())


def test_foreign_files_are_never_deleted(tmp_path: Path) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig()):
        pass
    folder = next(tmp_path.glob("s-*"))
    (folder / "holiday.jpg").write_bytes(b"photo")
    (folder / "settings.json").write_bytes(b"junk")
    with pytest.raises(InputError, match="not pinid's"):
        FeatureCache.open(tmp_path, FeatureConfig(), reset=True)
    assert (folder / "holiday.jpg").read_bytes() == b"photo"
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(InputError, match="not a directory"):
        FeatureCache.open(tmp_path / "file", FeatureConfig())


def test_many_small_chunks_are_merged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "_COMPACT_ABOVE", 3)
    monkeypatch.setattr(cache_module, "_COMPACT_TARGET", 6)
    with FeatureCache.open(tmp_path, FeatureConfig(), chunk_size=1) as cache:
        for n in range(10):
            cache.put(digest(n), fake_entry(n))
            assert all(cache.get(digest(k)) is not None for k in range(n + 1))
    assert len(chunk_files(tmp_path)) <= 6 * 4
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        assert len(cache) == 10
        for n in range(10):
            assert_same(cache.get(digest(n)), fake_entry(n))


def test_put_checks_the_digest(tmp_path: Path) -> None:
    with FeatureCache.open(tmp_path, FeatureConfig()) as cache:
        with pytest.raises(ValueError):
            cache.put(b"short", fake_entry(0))
