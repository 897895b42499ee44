"""pinid dedup: photo hashes, candidate pairs, guarded grouping, the embedding cache, --against, CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pinid.dedup import graph as dedup_graph
from pinid.dedup import DedupOptions, Listing, dedup, find_groups, read_listings
from pinid.encoder.cache import EmbedOptions, Embedded
from pinid.dedup.metrics import pairwise_scores
from pinid.encoder.cache import EmbeddingCache
from pinid.errors import CatalogueError, InputError
from pinid.phash import WINDOWS, hamming, phash, photo_distance, window_hashes

from tests.support import CountingEncoder, corrupt_files, draw_pin_image
from tests.support import run

PHASH_ONLY = DedupOptions(mode="photo", min_cosine=1.0)  # random test weights: trust the photo hash only


def reupload(image: Image.Image, path: Path, crop: float = 1.0, size: int = 100) -> Path:
    """What a re-uploader does: crop a little, shrink, re-compress as JPEG."""
    width, height = image.size
    cropped = image.crop((0, 0, round(width * crop), round(height * crop)))
    cropped.resize((size, size), Image.Resampling.BILINEAR).save(path, quality=60)
    return path


@pytest.fixture
def listings_dir(tmp_path: Path) -> Path:
    """Five pins; pin 0 re-uploaded twice (one cropped), pin 1 as a byte-identical copy."""
    folder = tmp_path / "listings"
    folder.mkdir()
    for seed in range(5):
        draw_pin_image(seed).save(folder / f"pin{seed}.png")
    reupload(draw_pin_image(0), folder / "pin0-reupload.jpg")
    reupload(draw_pin_image(0), folder / "pin0-cropped.jpg", crop=0.9)
    shutil.copy(folder / "pin1.png", folder / "zz-pin1-copy.png")
    return folder




def by_id(rows) -> dict[str, Any]:  # noqa: ANN001
    return {row.listing_id: row for row in rows}


# -------------------------------------------------------------- photo hash
def test_phash_survives_reupload_and_separates_different_pins(tmp_path: Path) -> None:
    original = draw_pin_image(7, size=256)
    again = Image.open(reupload(original, tmp_path / "r.jpg", size=150)).convert("RGB")
    cropped = Image.open(reupload(original, tmp_path / "c.jpg", crop=0.9, size=150)).convert("RGB")
    assert hamming(phash(original), phash(original)) == 0
    assert hamming(phash(original), phash(again)) <= 4
    assert photo_distance(window_hashes(original), window_hashes(cropped))[0] <= 8
    others = [photo_distance(window_hashes(original), window_hashes(draw_pin_image(s, size=256)))[0]
              for s in range(20, 30)]
    assert min(others) > 8
    assert window_hashes(original).shape == (WINDOWS,)


# ----------------------------------------------------------------- metrics
def test_pairwise_scores_on_hand_made_groupings() -> None:
    truth = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 2, "f": 3}
    perfect = pairwise_scores(dict(truth), truth)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == perfect["purity"] == 1.0
    # {a,b} {c,d,e} {f}: true pairs ab ac bc de (4); predicted ab cd ce de (4); correct ab de (2)
    split = pairwise_scores({"a": "x", "b": "x", "c": "y", "d": "y", "e": "y", "f": "z"}, truth)
    assert split["precision"] == pytest.approx(0.5) and split["recall"] == pytest.approx(0.5)
    assert split["f1"] == pytest.approx(0.5) and split["purity"] == pytest.approx(5 / 6)
    everything = pairwise_scores({k: 0 for k in truth}, truth)
    assert everything["recall"] == 1.0 and everything["precision"] == pytest.approx(4 / 15)
    assert everything["purity"] == pytest.approx(3 / 6)
    alone = pairwise_scores({}, truth)  # nothing claimed (e.g. all unreadable): precision 1, recall 0
    assert alone["precision"] == 1.0 and alone["recall"] == 0.0 and alone["f1"] == 0.0


# ------------------------------------------------------ pairs and grouping
def test_knn_pairs_match_brute_force_exact_and_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(60, 16))
    vectors = np.repeat(centres, 5, axis=0) + 0.05 * rng.normal(size=(300, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    truth = {(i, j) for i in range(300) for j in range(i + 1, 300) if i // 5 == j // 5}
    exact = dedup_graph.knn_pairs(vectors, k=4, min_score=0.9)
    assert set(zip(exact.left.tolist(), exact.right.tolist())) == truth
    np.testing.assert_allclose(exact.score, np.einsum("ij,ij->i", vectors[exact.left], vectors[exact.right]),
                               atol=1e-5)
    monkeypatch.setattr(dedup_graph, "EXACT_LIMIT", 100)  # force the IVF path on a small set
    approximate = dedup_graph.knn_pairs(vectors, k=4, min_score=0.9)
    found = set(zip(approximate.left.tolist(), approximate.right.tolist()))
    assert len(found & truth) / len(truth) >= 0.95 and found <= truth


def test_knn_pairs_report_progress_in_the_one_stage_shape() -> None:
    vectors = np.eye(8, dtype=np.float32)[np.arange(10) % 8]
    calls: list[tuple[str, int, int]] = []
    dedup_graph.knn_pairs(vectors, k=2, min_score=0.5, on_progress=lambda *args: calls.append(args))
    assert calls and all(stage == "neighbours" and total == 10 for stage, _, total in calls)
    assert calls[-1][1] == 10  # (stage, done, total): done counts up to total, like every other stage


def test_find_groups_progress_is_stage_done_total(listings_dir: Path, tiny_encoder, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    dedup(read_listings(listings_dir), tiny_encoder, EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()),
          PHASH_ONLY, on_progress=lambda *args: calls.append(args))
    finished = {stage: (done, total) for stage, done, total in calls}
    assert list(finished) == ["hashing", "encoding", "neighbours", "grouping"]
    assert finished["hashing"] == (8, 8) and finished["neighbours"] == (7, 7) and finished["grouping"] == (7, 7)


def test_options_name_direction_and_unit() -> None:
    options = DedupOptions(mode="pin", min_cosine=0.8, max_phash_distance=6)
    assert options.pin_min_cosine == 0.8 and options.photo_min_cosine == 0.97  # same photo: never looser
    assert DedupOptions(mode="photo").photo_min_cosine == 0.97 and DedupOptions(mode="pin").pin_min_cosine == 0.90
    with pytest.raises(InputError, match="cosine"):
        DedupOptions(min_cosine=1.5)
    with pytest.raises(InputError, match="between 0 and 64"):
        DedupOptions(max_phash_distance=65)


def test_hash_pairs_find_near_hashes_only() -> None:
    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 2**63, size=(50, WINDOWS), dtype=np.int64).astype(np.uint64)
    hashes[10, 4] = hashes[20, 0] ^ np.uint64(0b1011)  # 20's whole image is 3 bits from a window of 10
    left, right = dedup_graph.hash_pairs(hashes)
    assert (10, 20) in set(zip(left.tolist(), right.tolist()))
    assert len(left) < 10


def _embedded(vectors: np.ndarray) -> Embedded:
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, size=(len(vectors), WINDOWS), dtype=np.int64).astype(np.uint64)
    return Embedded(np.arange(len(vectors)), [bytes([i]) * 32 for i in range(len(vectors))],
                    vectors.astype(np.float32), hashes, {}, len(vectors), 0)


def test_chaining_trap_is_refused_unless_verified() -> None:
    # A~B 0.9, B~C 0.9, A~C 0.62 (threshold 0.85): C must not join A's group through B.
    angle = np.arccos(0.9)
    vectors = np.array([[1, 0, 0], [np.cos(angle), np.sin(angle), 0],
                        [np.cos(2 * angle), np.sin(2 * angle), 0], [0, 0, 1]])
    listings = [Listing(name, Path(f"{name}.jpg")) for name in "ABCD"]
    rows = by_id(find_groups(listings, _embedded(vectors), DedupOptions(mode="pin", min_cosine=0.85)))
    assert rows["A"].group_id == rows["B"].group_id != rows["C"].group_id
    assert rows["B"].reason == "same_pin" and rows["C"].group_size == 1 and rows["D"].reason == "unique"
    assert rows["A"].representative == "A" and rows["B"].score == pytest.approx(0.9, abs=1e-5)

    asked: list[tuple[str, str]] = []

    def verifier(a: Listing, b: Listing, score: float) -> bool:  # stands in for geometric verification
        asked.append((a.listing_id, b.listing_id))
        return "D" not in (a.listing_id, b.listing_id)

    options = DedupOptions(mode="pin", min_cosine=0.85, verifier=verifier, verify_floor=0.5)
    rows = by_id(find_groups(listings, _embedded(vectors), options))
    assert rows["A"].group_id == rows["B"].group_id == rows["C"].group_id and rows["A"].group_size == 3
    assert rows["D"].group_size == 1 and asked


def test_photo_mode_groups_reuploads_and_exact_copies(listings_dir: Path, tiny_encoder, tmp_path: Path) -> None:
    cache = EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())
    report = dedup(read_listings(listings_dir), tiny_encoder, cache, PHASH_ONLY)
    rows = by_id(report.rows)
    assert rows["pin0.png"].group_id == rows["pin0-reupload.jpg"].group_id == rows["pin0-cropped.jpg"].group_id
    assert rows["pin0.png"].group_size == 3
    assert {rows["pin0-reupload.jpg"].reason, rows["pin0-cropped.jpg"].reason} <= {"same_photo", "representative"}
    assert rows["zz-pin1-copy.png"].reason == "exact_file" and rows["zz-pin1-copy.png"].representative == "pin1.png"
    assert all(rows[f"pin{s}.png"].reason == "unique" for s in (2, 3, 4))
    assert report.encoded == 7 and report.stats["groups"] == 2 and report.stats["duplicates"] == 3


# ------------------------------------------------------------------- cache
def test_rerun_embeds_only_new_or_changed_files(listings_dir: Path, tiny_encoder, tmp_path: Path) -> None:
    listings = read_listings(listings_dir)
    counting = CountingEncoder(tiny_encoder)
    first = dedup(listings, counting, EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()), PHASH_ONLY)
    assert counting.images == 7 and first.encoded == 7  # 8 files, two with the same bytes
    counting.images = 0
    again = dedup(listings, counting, EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()), PHASH_ONLY)
    assert counting.images == 0 and again.cached == 7
    assert [r.group_id for r in again.rows] == [r.group_id for r in first.rows]
    draw_pin_image(99).save(listings_dir / "pin3.png")  # changed file
    draw_pin_image(98).save(listings_dir / "new.png")  # new file
    third = dedup(read_listings(listings_dir), counting,
                  EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()), PHASH_ONLY)
    assert counting.images == 2 and third.encoded == 2 and third.cached == 6  # pin3 changed


def test_interrupted_run_resumes_from_written_chunks(listings_dir: Path, tiny_encoder, tmp_path: Path) -> None:
    listings = read_listings(listings_dir)
    small_chunks = EmbedOptions(batch_size=2, chunk_size=2)
    dying = CountingEncoder(tiny_encoder, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        dedup(listings, dying, EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()), PHASH_ONLY,
              small_chunks)
    assert dying.images == 4
    assert len(EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())) == 4
    resumed = CountingEncoder(tiny_encoder)
    report = dedup(listings, resumed, EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()),
                   PHASH_ONLY, small_chunks)
    assert resumed.images == 3 and report.encoded == 3 and report.cached == 4
    assert not list((tmp_path / "cache").glob(".*tmp"))  # no half-written files left behind


def test_corrupt_listing_images_are_reported_not_fatal(listings_dir: Path, tiny_encoder, tmp_path: Path) -> None:
    bad = corrupt_files(listings_dir)
    (tmp_path / "gone.csv").write_text("listing_id,image\nmissing,nowhere.jpg\n")
    listings = read_listings(listings_dir) + read_listings(tmp_path / "gone.csv")
    report = dedup(listings, tiny_encoder, EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()),
                   PHASH_ONLY)
    rows = by_id(report.rows)
    assert len(report.rows) == len(listings) and report.stats["unreadable"] == len(bad) + 1
    for path in bad:
        assert rows[path.name].reason == "unreadable" and rows[path.name].error
    assert rows["missing"].error == "file not found"
    assert rows["pin0.png"].group_size == 3


# --------------------------------------------------------------------- CLI
def test_cli_writes_groups_csv_and_reuses_cache(listings_dir: Path, tiny_model_dir: Path, tmp_path: Path,
                                                capsys) -> None:
    args = ["dedup", listings_dir, "-o", tmp_path / "out" / "groups.csv", "--model",
            f"local-dir:{tiny_model_dir}", "--threshold", "1"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "2 duplicate groups" in out and "encoded 7, from cache 0" in out
    with open(tmp_path / "out" / "groups.csv", newline="") as handle:
        rows = {row["listing_id"]: row for row in csv.DictReader(handle)}
    assert rows["zz-pin1-copy.png"]["reason"] == "exact_file" and rows["zz-pin1-copy.png"]["group_size"] == "2"
    assert (tmp_path / "out" / "pinid-dedup-cache" / "cache.json").is_file()
    code, out, _ = run(capsys, *args, "--mode", "pin", "--json", "-o", tmp_path / "out" / "groups.json")
    assert code == 0 and "encoded 0, from cache 7" in out
    assert len(json.loads((tmp_path / "out" / "groups.json").read_text())) == 8


def test_cli_exit_codes_for_bad_input(listings_dir: Path, tiny_model_dir: Path, other_model_dir: Path,
                                      tmp_path: Path, capsys) -> None:
    model = ["--model", f"local-dir:{tiny_model_dir}"]
    code, _, err = run(capsys, "dedup", tmp_path / "nowhere", *model)
    assert code == 2 and err.startswith("pinid: error:") and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.csv").write_text("id,picture\n1,a.jpg\n")
    code, _, err = run(capsys, "dedup", tmp_path / "bad.csv", *model)
    assert code == 4 and "listing_id" in err
    (tmp_path / "twice.csv").write_text("listing_id,image\n1,a.jpg\n1,b.jpg\n")
    assert run(capsys, "dedup", tmp_path / "twice.csv", *model)[0] == 4
    assert run(capsys, "dedup", listings_dir, "--mode", "colour", *model)[0] == 2
    assert run(capsys, "dedup", listings_dir, "--against", tmp_path / "no-index")[0] == 5
    cache = ["--cache", tmp_path / "cache", "-o", tmp_path / "g.csv"]
    assert run(capsys, "dedup", listings_dir, *model, *cache)[0] == 0
    code, _, err = run(capsys, "dedup", listings_dir, "--model", f"local-dir:{other_model_dir}", *cache)
    assert code == 6 and "--reset-cache" in err
    code, out, _ = run(capsys, "dedup", listings_dir, "--model", f"local-dir:{other_model_dir}", *cache,
                       "--reset-cache")
    assert code == 0 and "encoded 7" in out


def test_read_listings_forms(tmp_path: Path) -> None:
    (tmp_path / "l.jsonl").write_text('{"listing_id": "a", "image": "x.jpg"}\n\n'
                                      '{"listing_id": "b", "image": "y.jpg"}\n')
    assert [item.listing_id for item in read_listings(tmp_path / "l.jsonl")] == ["a", "b"]
    assert read_listings(tmp_path / "l.jsonl")[0].image == tmp_path / "x.jpg"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogueError):
        read_listings(tmp_path / "empty")
    with pytest.raises(InputError):
        read_listings(tmp_path / "l.txt")


def _desk_photo(pin_seed: int, texture_seed: int) -> Image.Image:
    """A small pin on a desk: the same broad light and layout, a different fine texture per shot."""
    yy, xx = np.mgrid[0:240, 0:320]
    broad = 120 + 60 * np.sin(xx / 50.0) * np.cos(yy / 70.0)
    grain = np.random.default_rng(texture_seed).normal(0, 1, (240, 320))  # fine: invisible to a 32x32 hash
    desk = np.clip(broad + 10 * grain, 0, 255).astype(np.uint8)
    photo = Image.fromarray(np.stack([desk, (desk * 0.8).astype(np.uint8), (desk * 0.6).astype(np.uint8)], -1))
    photo.paste(draw_pin_image(pin_seed).resize((64, 64)), (128, 88))
    return photo


def test_different_pins_on_look_alike_desks_are_not_the_same_photo(tmp_path: Path, tiny_encoder) -> None:
    folder = tmp_path / "desk"
    folder.mkdir()
    _desk_photo(1, texture_seed=10).save(folder / "a.png")
    _desk_photo(2, texture_seed=11).save(folder / "b.png")
    reupload(_desk_photo(1, texture_seed=10), folder / "a-reupload.jpg", crop=0.95, size=260)
    hashes = [window_hashes(Image.open(folder / name).convert("RGB")) for name in ("a.png", "b.png")]
    assert photo_distance(hashes[0], hashes[1])[0] <= PHASH_ONLY.max_phash_distance  # the hash alone would merge them
    cache = EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())
    rows = by_id(dedup(read_listings(folder), tiny_encoder, cache, PHASH_ONLY).rows)
    assert rows["a.png"].group_id == rows["a-reupload.jpg"].group_id
    assert rows["b.png"].group_id != rows["a.png"].group_id
    unconfirmed = DedupOptions(mode="photo", min_cosine=1.0, confirm_photos=False)
    rows = by_id(dedup(read_listings(folder), tiny_encoder, cache, unconfirmed).rows)
    assert rows["b.png"].group_id == rows["a.png"].group_id  # what the confirmation prevents
