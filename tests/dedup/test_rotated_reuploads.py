"""Photo-mode dedup groups re-uploads turned by any angle and mirrored ones, and nothing else.

The photos are made here: the benchmark's seller-photo simulator (pinid.synth)
shoots a generated pin, and a re-uploader turns the photo (black corners, or
cropped back to the largest upright rectangle inside), mirrors it, shrinks it
and re-compresses it. Look-alikes must stay apart: another seller's photo of
the same pin, and different pins shot on the same desk in the same light and
layout (each shot with its own fine texture, as two real shots have), whose
photo hashes are close. Random test weights: the photo hashes and their
geometric confirmation decide alone (``--threshold 1``).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pinid.dedup import DedupOptions, dedup, read_listings
from pinid.dedup.graph import hash_pairs
from pinid.dedup.photo_match import MIN_INLIERS, PhotoConfirmer, photo_features, similarity_inliers
from pinid.encoder.cache import EmbeddingCache
from pinid.errors import EncoderMismatchError
from pinid.phash import MAX_RING_DISTANCE, RINGS, WINDOWS, photo_distance, ring_distance, window_hashes
from pinid.synth.reference import material_from_image
from pinid.synth.edits import turn
from pinid.synth.scenes import seller_photo

from tests.support import draw_pin_image, run

PHASH_ONLY = DedupOptions(mode="photo", min_cosine=1.0)  # random test weights: trust the photo hash only
ANGLES = (7, 30, 45, 90, 137, 180)


def shoot(pin_seed: int, shot_seed: int) -> Image.Image:
    """A seller's photo of a generated pin; the same ``shot_seed`` gives the same frame, desk and light."""
    material = material_from_image(np.asarray(draw_pin_image(pin_seed, 96)), size=96)
    return Image.open(io.BytesIO(seller_photo(material, np.random.default_rng(shot_seed)))).convert("RGB")


def desk_photo(pin_seed: int, texture_seed: int) -> Image.Image:
    """A pin on a desk: the same broad light and layout for every ``pin_seed``, fine texture per shot."""
    yy, xx = np.mgrid[0:480, 0:640]
    broad = 120 + 60 * np.sin(xx / 90.0) * np.cos(yy / 120.0)
    grain = np.random.default_rng(texture_seed).normal(0, 1, (480, 640))
    desk = np.clip(broad + 12 * grain, 0, 255).astype(np.uint8)
    photo = Image.fromarray(np.stack([desk, (desk * 0.8).astype(np.uint8), (desk * 0.6).astype(np.uint8)], -1))
    photo.paste(draw_pin_image(pin_seed, 200), (220, 140))
    return photo


def reupload(image: Image.Image, path: Path, scale: float, quality: int) -> Path:
    """Shrunk and re-compressed, as a listing site does."""
    size = (max(64, round(image.width * scale)), max(64, round(image.height * scale)))
    image.resize(size, Image.Resampling.BILINEAR).save(path, quality=quality)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An original and its turned and mirrored re-uploads; another seller's photo of the same pin;
    three pins shot on one desk, two of them re-uploaded turned or mirrored."""
    folder = tmp_path_factory.mktemp("rotated")
    original = shoot(pin_seed=1, shot_seed=10)
    original.save(folder / "original.jpg", quality=92)
    edits: dict[str, Image.Image] = {}
    for angle in ANGLES:
        edits[f"turned-{angle}"] = turn(original, angle)
        edits[f"turned-{angle}-cropped"] = turn(original, angle, crop_back=True)
    mirrored = ImageOps.mirror(original)
    edits["mirrored"] = mirrored
    edits["mirrored-turned-30"] = turn(mirrored, 30)
    edits["mirrored-turned-200-cropped"] = turn(mirrored, 200, crop_back=True)
    rng = np.random.default_rng(0)
    for name, edited in edits.items():
        reupload(edited, folder / f"{name}.jpg", scale=float(rng.uniform(0.5, 0.9)), quality=int(rng.integers(60, 90)))
    shoot(pin_seed=1, shot_seed=11).save(folder / "zz-same-pin-other-seller.jpg", quality=92)
    desk = {pin: desk_photo(pin, texture_seed=10 + pin) for pin in (2, 3, 4)}
    for pin, photo in desk.items():
        photo.save(folder / f"desk-pin{pin}.jpg", quality=92)
    reupload(turn(desk[2], 30), folder / "desk-pin2-turned-30.jpg", scale=0.7, quality=75)
    reupload(turn(ImageOps.mirror(desk[3]), 137, crop_back=True), folder / "desk-pin3-mirrored-turned-137-cropped.jpg",
             scale=0.8, quality=70)
    return folder


def _hashes(path: Path) -> np.ndarray:
    return window_hashes(Image.open(path).convert("RGB"))


# -------------------------------------------------------------- ring hashes
def test_ring_hashes_survive_turns_and_mirrors_and_tell_photos_apart(photos: Path) -> None:
    original = _hashes(photos / "original.jpg")
    assert original.shape == (WINDOWS,) and RINGS.stop == WINDOWS
    for path in sorted(photos.glob("*.jpg")):
        if path.name.startswith(("turned", "mirrored")):
            assert ring_distance(original, _hashes(path))[0] <= MAX_RING_DISTANCE, path.name
    assert photo_distance(original, _hashes(photos / "turned-30.jpg"))[0] > 12  # the DCT hash alone misses it
    assert ring_distance(original, _hashes(photos / "zz-same-pin-other-seller.jpg"))[0] > MAX_RING_DISTANCE
    desk = {path.stem: _hashes(path) for path in sorted(photos.glob("desk-*.jpg"))}
    assert ring_distance(desk["desk-pin2"], desk["desk-pin2-turned-30"])[0] <= MAX_RING_DISTANCE
    assert ring_distance(desk["desk-pin3"], desk["desk-pin3-mirrored-turned-137-cropped"])[0] <= MAX_RING_DISTANCE
    for a, b in (("desk-pin2", "desk-pin3"), ("desk-pin2", "desk-pin4"), ("desk-pin3", "desk-pin4"),
                 ("desk-pin2-turned-30", "desk-pin3"), ("desk-pin3-mirrored-turned-137-cropped", "desk-pin2")):
        assert ring_distance(desk[a], desk[b])[0] > MAX_RING_DISTANCE, (a, b)
    assert min(photo_distance(desk["desk-pin2"], desk[name])[0] for name in ("desk-pin3", "desk-pin4")) <= 12


def test_ring_hash_of_a_quarter_turn_is_exact() -> None:
    photo = shoot(pin_seed=4, shot_seed=3)
    hashes = window_hashes(photo)
    for turned in (photo.transpose(Image.Transpose.ROTATE_90), photo.transpose(Image.Transpose.ROTATE_180),
                   ImageOps.mirror(photo)):
        assert ring_distance(hashes, window_hashes(turned))[0] <= 2


def test_hash_pairs_find_ring_matches_within_the_ring_distance_only() -> None:
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 2**63, size=(40, WINDOWS), dtype=np.int64).astype(np.uint64)
    near, far = np.uint64(0b11111 << 20), np.uint64(0x3FFF << 20)  # 5 and 14 bits, all outside the lowest band
    hashes[10, RINGS.start + 6] = hashes[20, RINGS.start] ^ near  # 20's largest disc: 5 bits from a disc of 10
    hashes[30, RINGS.start + 3] = hashes[31, RINGS.start] ^ far  # shares a band, but 14 bits apart
    pairs = set(zip(*(side.tolist() for side in hash_pairs(hashes))))
    assert (10, 20) in pairs and (30, 31) not in pairs


# ----------------------------------------------------- geometric confirmation
def test_confirmation_accepts_mirrored_and_turned_copies_only(photos: Path) -> None:
    original = photo_features(photos / "original.jpg")
    mirrored = photo_features(photos / "mirrored.jpg")
    assert original is not None and mirrored is not None and mirrored.mirrored is not None
    assert similarity_inliers(original, mirrored) < MIN_INLIERS  # as it is, a mirror does not line up
    assert similarity_inliers(original, mirrored.mirrored) >= MIN_INLIERS
    confirm = PhotoConfirmer()
    for name in ("mirrored.jpg", "mirrored-turned-30.jpg", "turned-137.jpg", "turned-45-cropped.jpg"):
        assert confirm("o", photos / "original.jpg", name, photos / name), name
    assert not confirm("o", photos / "original.jpg", "s", photos / "zz-same-pin-other-seller.jpg")
    for name in ("desk-pin3.jpg", "desk-pin4.jpg", "desk-pin3-mirrored-turned-137-cropped.jpg"):
        assert not confirm("d", photos / "desk-pin2.jpg", name, photos / name), name
    assert confirm("d", photos / "desk-pin2.jpg", "t", photos / "desk-pin2-turned-30.jpg")


# ------------------------------------------------------------------ grouping
def test_dedup_groups_every_turned_and_mirrored_reupload_with_its_original(photos: Path, tiny_encoder,
                                                                          tmp_path: Path) -> None:
    cache = EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())
    rows = {row.listing_id: row for row in dedup(read_listings(photos), tiny_encoder, cache, PHASH_ONLY).rows}
    group = rows["original.jpg"].group_id
    copies = [name for name in rows if name.startswith(("turned", "mirrored"))]
    assert len(copies) == 2 * len(ANGLES) + 3
    assert {name: rows[name].group_id for name in copies} == {name: group for name in copies}
    assert all(rows[name].reason in ("same_photo", "representative") for name in copies)
    assert rows["original.jpg"].group_size == len(copies) + 1
    assert rows["zz-same-pin-other-seller.jpg"].reason == "unique"
    assert rows["desk-pin2-turned-30.jpg"].group_id == rows["desk-pin2.jpg"].group_id
    assert rows["desk-pin3-mirrored-turned-137-cropped.jpg"].group_id == rows["desk-pin3.jpg"].group_id
    assert rows["desk-pin2.jpg"].group_size == rows["desk-pin3.jpg"].group_size == 2
    assert len({rows[name].group_id for name in ("original.jpg", "desk-pin2.jpg", "desk-pin3.jpg")}) == 3
    assert rows["desk-pin4.jpg"].reason == "unique"


def test_cli_dedup_groups_a_turned_and_a_mirrored_reupload(photos: Path, tiny_model_dir: Path, tmp_path: Path,
                                                          capsys) -> None:
    with open(tmp_path / "listings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["listing_id", "image"])
        for name in ("original.jpg", "turned-30.jpg", "mirrored-turned-200-cropped.jpg",
                     "zz-same-pin-other-seller.jpg"):
            writer.writerow([name, photos / name])
    code, _, err = run(capsys, "dedup", tmp_path / "listings.csv", "-o", tmp_path / "groups.csv",
                       "--model", f"local-dir:{tiny_model_dir}", "--threshold", "1")
    assert code == 0, err
    with open(tmp_path / "groups.csv", newline="") as handle:
        rows = {row["listing_id"]: row for row in csv.DictReader(handle)}
    assert rows["turned-30.jpg"]["group_id"] == rows["original.jpg"]["group_id"]
    assert rows["mirrored-turned-200-cropped.jpg"]["group_id"] == rows["original.jpg"]["group_id"]
    assert rows["turned-30.jpg"]["reason"] == "same_photo" and rows["original.jpg"]["group_size"] == "3"
    assert rows["zz-same-pin-other-seller.jpg"]["reason"] == "unique"


# ------------------------------------------------------------ cache, script
def test_a_cache_of_the_old_photo_hashes_is_refused(tiny_encoder, tmp_path: Path) -> None:
    EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())
    meta_path = tmp_path / "cache" / "cache.json"
    meta = json.loads(meta_path.read_text())
    meta["identity"].update(phash_version=1, windows=28)  # written by pinid before the ring hashes
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(EncoderMismatchError, match="photo hash v1"):
        EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())
    assert len(EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity(), reset=True)) == 0


def test_eval_dedup_scores_transformed_copies(photos: Path, tmp_path: Path) -> None:
    with open(tmp_path / "listings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["listing_id", "image", "pin_id", "photo_group", "kind"])
        writer.writerow(["a", photos / "original.jpg", "p1", "g1", "original"])
        writer.writerow(["a-again", photos / "turned-7.jpg", "p1", "g1", "reupload"])
        writer.writerow(["b", photos / "desk-pin2.jpg", "p2", "g2", "original"])
        writer.writerow(["c", photos / "desk-pin3.jpg", "p3", "g3", "original"])
    script = Path(__file__).resolve().parents[2] / "scripts" / "eval_dedup.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path), "--tiny-random", "--transformed", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["listings"] == 4 + 12 and report["transformed_copies"] == 12
    hash_only = report["results"][0]
    assert hash_only["setting"].startswith("photo, photo hash only")
    assert hash_only["copies_grouped"] == {"turned": 1.0, "turned-cropped": 1.0, "mirrored": 1.0,
                                           "mirrored-turned": 1.0}
    assert hash_only["precision"] == 1.0 and hash_only["recall"] == 1.0
