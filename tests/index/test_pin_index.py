from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import pinid.index.build as build_module
import pinid.index.search as search_module
from pinid import _atomic
from pinid.catalogue import read_catalogue
from pinid.encoder import Encoder
from pinid.errors import CatalogueError, EncoderMismatchError, ImageError, IndexFormatError, InputError, PinidError
from pinid.index import PinIndex

from tests.support import corrupt_files, draw_pin_image


@pytest.fixture
def built(make_catalogue, tiny_encoder: Encoder, tmp_path: Path) -> PinIndex:
    return PinIndex.build(read_catalogue(make_catalogue(pins=6, images_per_pin=2)), tmp_path / "idx", tiny_encoder)


def test_exact_catalogue_image_is_rank_one_with_score_near_one(built: PinIndex, tmp_path: Path) -> None:
    photo = tmp_path / "catalogue" / "pin-004" / "img1.png"
    matches = built.identify(photo, k=3, verify=False).matches
    assert matches[0].pin_id == "pin-004" and matches[0].score >= 0.99
    assert matches[0].name == "Pin number 4" and matches[0].metadata == {"series": "test"}
    assert matches[0].reference_image == str(photo)
    assert [m.rank for m in matches] == [1, 2, 3]
    assert matches[0].score >= matches[1].score >= matches[2].score


def test_each_pin_appears_once_scored_by_its_best_image(built: PinIndex) -> None:
    matches = built.identify(draw_pin_image(2 * 100 + 1), k=10, verify=False).matches
    assert len(matches) == 6 and len({m.pin_id for m in matches}) == 6
    assert matches[0].pin_id == "pin-002"


def test_search_looks_deeper_when_one_pin_has_many_close_images(make_catalogue, tiny_encoder: Encoder,
                                                                 tmp_path: Path) -> None:
    root = make_catalogue(pins=5, images_per_pin=1)
    crowded = root / "pin-000"
    for i in range(1, 60):  # near-duplicates of the same picture crowd the top of the image ranking
        image = draw_pin_image(0)
        image.putpixel((i % 128, i // 128), (i, i, i))
        image.save(crowded / f"dup{i}.png")
    index = PinIndex.build(read_catalogue(root), tmp_path / "idx", tiny_encoder)
    matches = index.identify(draw_pin_image(0), k=4, verify=False).matches
    assert matches[0].pin_id == "pin-000" and len({m.pin_id for m in matches}) == 4


def test_build_report_counts_and_corrupt_files_are_skipped(make_catalogue, tiny_encoder: Encoder,
                                                           tmp_path: Path) -> None:
    root = make_catalogue(pins=17, images_per_pin=1)
    bad = corrupt_files(root / "pin-broken")
    index = PinIndex.build(read_catalogue(root), tmp_path / "idx", tiny_encoder)
    report = index.build_report
    assert report is not None and report.pins == 17 and report.images == 17
    skipped = dict(report.skipped)
    for path in bad:
        assert str(path) in skipped
    assert "pin left out" in skipped["pin-broken"]
    assert len(index) == 17 and (index.manifest.pins, index.manifest.images) == (17, 17)


def test_catalogue_with_only_unreadable_images_builds_nothing(tiny_encoder: Encoder, tmp_path: Path) -> None:
    corrupt_files(tmp_path / "catalogue" / "pin-x")
    with pytest.raises(CatalogueError, match="none of its 3 images"):
        PinIndex.build(read_catalogue(tmp_path / "catalogue"), tmp_path / "idx", tiny_encoder)
    assert not (tmp_path / "idx").exists()
    assert not list(tmp_path.glob(".idx*"))


def test_manifest_records_encoder_and_counts(built: PinIndex, tiny_encoder: Encoder) -> None:
    manifest = json.loads((built.path / "manifest.json").read_text())
    assert manifest["format"] == "pinid-index" and manifest["format_version"] == 4
    assert manifest["encoder"] == tiny_encoder.identity()
    assert manifest["counts"] == {"pins": 6, "images": 12}
    assert manifest["created_at"] and manifest["pinid_version"]


def test_database_ids_match_faiss_ids(built: PinIndex) -> None:
    import faiss

    vectors = faiss.read_index(str(built.path / "vectors.faiss"))
    with sqlite3.connect(built.path / "catalogue.sqlite") as connection:
        ids = [row[0] for row in connection.execute("SELECT image_id FROM images ORDER BY image_id")]
        hashes = [row[0] for row in connection.execute("SELECT sha256 FROM images")]
    assert ids == list(range(12))
    assert all(len(h) == 64 for h in hashes)
    assert np.allclose(np.linalg.norm(vectors.reconstruct(int(ids[-1]))), 1.0, atol=1e-5)


def test_load_with_manifest_encoder_answers_the_same(built: PinIndex, tmp_path: Path) -> None:
    photo = tmp_path / "catalogue" / "pin-001" / "img0.png"
    reloaded = PinIndex.load(built.path, device="cpu")
    assert reloaded.identify(photo, k=3, verify=False).matches == built.identify(photo, k=3, verify=False).matches


def test_query_with_another_encoder_names_both(built: PinIndex, other_model_dir: Path) -> None:
    other = Encoder.load(f"local-dir:{other_model_dir}", device="cpu")
    with pytest.raises(EncoderMismatchError) as caught:
        PinIndex.load(built.path, encoder=other)
    message = str(caught.value)
    assert str(built.manifest.encoder["model"]) in message and str(other_model_dir) in message


def test_moved_weights_with_same_checksum_are_accepted(built: PinIndex, tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    import shutil

    moved = tmp_path / "moved-model"
    shutil.copytree(tiny_model_dir, moved)
    encoder = Encoder.load(f"local-dir:{moved}", device="cpu")
    assert PinIndex.load(built.path, encoder=encoder).identify(draw_pin_image(1), verify=False).matches


def test_unreadable_photo_raises_image_error(built: PinIndex, tmp_path: Path) -> None:
    bad = corrupt_files(tmp_path / "bad")
    with pytest.raises(ImageError):
        built.identify(bad[0], verify=False).matches
    results = built.identify_many([bad[1], draw_pin_image(100)], k=2, verify=False)
    assert results[0].error and not results[0].matches
    assert results[1].error is None and results[1].matches[0].pin_id == "pin-001"


def test_search_by_vector_without_encoder(built: PinIndex, tiny_encoder: Encoder) -> None:
    bare = PinIndex.load(built.path, encoder=None)
    vector = tiny_encoder.encode_images([draw_pin_image(300)]).vectors
    assert bare.search(vector, k=1)[0][0].pin_id == "pin-003"
    with pytest.raises(PinidError, match="without an encoder"):
        bare.identify(draw_pin_image(300), verify=False).matches
    with pytest.raises(PinidError, match="k must be"):
        bare.search(vector, k=0)


# ---------------------------------------------------------------- atomic saving
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failed_rebuild_leaves_previous_index_intact(built: PinIndex, make_catalogue, tiny_encoder: Encoder,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(built.path)
    photo = tmp_path / "catalogue" / "pin-005" / "img0.png"
    expected = built.identify(photo, k=3, verify=False).matches

    def crash(path: Path, vectors: np.ndarray) -> None:
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(build_module, "write_vectors", crash)
    bigger = read_catalogue(make_catalogue(pins=8, root=tmp_path / "bigger", seed=7))
    with pytest.raises(OSError, match="disk full"):
        PinIndex.build(bigger, built.path, tiny_encoder)
    assert _snapshot(built.path) == before
    assert PinIndex.load(built.path, encoder=tiny_encoder).identify(photo, k=3, verify=False).matches == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx")] == []


def test_interrupt_during_write_also_cleans_up(built: PinIndex, make_catalogue, tiny_encoder: Encoder,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(built.path)

    def interrupted(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "write_database", interrupted)
    with pytest.raises(KeyboardInterrupt):
        PinIndex.build(read_catalogue(tmp_path / "catalogue"), built.path, tiny_encoder)
    assert _snapshot(built.path) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".idx")] == []


@pytest.mark.parametrize("exchange_supported", [True, False])
def test_rebuild_replaces_index(built: PinIndex, make_catalogue, tiny_encoder: Encoder, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, exchange_supported: bool) -> None:
    if not exchange_supported:
        monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    bigger = read_catalogue(make_catalogue(pins=9, root=tmp_path / "bigger", seed=3))
    rebuilt = PinIndex.build(bigger, built.path, tiny_encoder)
    assert len(PinIndex.load(rebuilt.path, encoder=None)) == 9
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_refuses_to_replace_a_directory_that_is_not_an_index(make_catalogue, tiny_encoder: Encoder,
                                                            tmp_path: Path) -> None:
    photos = tmp_path / "my-photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(InputError, match="not a pinid index"):
        PinIndex.build(read_catalogue(make_catalogue(pins=2)), photos, tiny_encoder)
    assert (photos / "holiday.jpg").read_bytes() == b"precious"


# ------------------------------------------------------------- damaged indexes
def _damage(folder: Path, how: str) -> None:
    if how == "missing manifest":
        (folder / "manifest.json").unlink()
    elif how == "corrupt manifest":
        (folder / "manifest.json").write_text("{truncated")
    elif how == "future format":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["format_version"] = 99
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif how == "missing vectors":
        (folder / "vectors.faiss").unlink()
    elif how == "truncated vectors":
        data = (folder / "vectors.faiss").read_bytes()
        (folder / "vectors.faiss").write_bytes(data[: len(data) // 2])
    elif how == "corrupt database":
        (folder / "catalogue.sqlite").write_bytes(b"not a database" * 100)
    elif how == "count mismatch":
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["counts"]["images"] += 1
        (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("how", ["missing manifest", "corrupt manifest", "future format", "missing vectors",
                                 "truncated vectors", "corrupt database", "count mismatch"])
def test_damaged_index_is_a_clear_error(built: PinIndex, how: str) -> None:
    _damage(built.path, how)
    with pytest.raises(IndexFormatError) as caught:
        PinIndex.load(built.path, encoder=None)
    assert str(built.path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_index_directory(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="does not exist"):
        PinIndex.load(tmp_path / "nothing", encoder=None)


def test_blas_search_agrees_with_faiss_search() -> None:
    import faiss

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((3000, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    faiss_index = faiss.IndexIDMap2(faiss.IndexFlatIP(24))
    ids = rng.permutation(10_000)[:3000].astype(np.int64)  # ids need not be 0..n-1
    faiss_index.add_with_ids(vectors, ids)
    queries = rng.standard_normal((130, 24)).astype(np.float32)  # more than one query block
    expected_scores, expected_ids = faiss_index.search(queries, 10)
    scores, found = search_module.ExactSearcher(faiss_index).search(queries, 10)
    assert np.array_equal(found, expected_ids)
    assert np.allclose(scores, expected_scores, atol=1e-5)
    all_scores, all_ids = search_module.ExactSearcher(faiss_index).search(queries[:1], 5000)
    assert all_ids.shape == (1, 3000) and np.all(np.diff(all_scores[0]) <= 0)


def test_moved_model_folder_error_says_how_to_point_at_it(make_catalogue, tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    import shutil

    from pinid.errors import WeightsUnavailableError

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    encoder = Encoder.load(f"local-dir:{model}", device="cpu")
    PinIndex.build(read_catalogue(make_catalogue(pins=2)), tmp_path / "idx", encoder)
    model.rename(tmp_path / "model-moved")
    with pytest.raises(WeightsUnavailableError, match="--model"):
        PinIndex.load(tmp_path / "idx")


def test_reference_paths_are_absolute_whatever_the_working_directory(make_catalogue, tiny_encoder: Encoder,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    make_catalogue(pins=2)
    monkeypatch.chdir(tmp_path)
    index = PinIndex.build(read_catalogue("catalogue"), "idx", tiny_encoder)
    reference = index.identify(draw_pin_image(0), k=1, verify=False).matches[0].reference_image
    assert Path(reference).is_absolute() and Path(reference).is_file()


def test_cached_rebuild_encodes_only_new_images_and_gives_the_same_index(make_catalogue, tiny_encoder: Encoder,
                                                                        tmp_path: Path) -> None:
    from pinid.encoder.cache import EmbeddingCache

    from tests.support import CountingEncoder

    root = make_catalogue(pins=4, images_per_pin=2)
    cache = EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())
    counting = CountingEncoder(tiny_encoder)
    first = PinIndex.build(read_catalogue(root), tmp_path / "idx", counting, cache=cache)  # type: ignore[arg-type]
    assert counting.images == 8
    make_catalogue(pins=5, images_per_pin=2, root=root)  # adds pin-004 (pins 0-3 are rewritten identically)
    (root / "pin-000" / "img1.png").write_bytes((root / "pin-001" / "img1.png").read_bytes())  # a changed file
    counting.images = 0
    second = PinIndex.build(read_catalogue(root), tmp_path / "idx", counting, cache=cache)  # type: ignore[arg-type]
    assert counting.images == 2  # pin-004's two images; the changed file's content was already known
    assert len(second) == 5 and len(first) == 4
    uncached = PinIndex.build(read_catalogue(root), tmp_path / "plain", tiny_encoder)
    photo = root / "pin-004" / "img0.png"
    assert [m.pin_id for m in second.identify(photo, k=5, verify=False).matches] == [m.pin_id for m in uncached.identify(photo, k=5, verify=False).matches]
    assert np.allclose([m.score for m in second.identify(photo, k=5, verify=False).matches],
                       [m.score for m in uncached.identify(photo, k=5, verify=False).matches], atol=1e-5)
