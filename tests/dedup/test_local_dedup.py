"""`pinid dedup --encoder local`: listings of one pin grouped with no model, from photos made here.

The photos come from pinid.synth's simulator: one generated pin photographed
by two sellers (different backgrounds, backing cards, light, pose and camera),
a re-upload of one of them, other pins (two of them captioned with the same
watermark), and another colourway of the first pin.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pinid.dedup import DedupOptions, read_listings
from pinid.dedup.local_pairs import (LocalDedupConfig, PhotoHashOnly, dedup_local, hue_difference, match_pair,
                                     open_feature_cache)
from pinid.encoder.cache import EmbeddingCache
from pinid.images import load_image
from pinid.local.features import query_features
from pinid.synth.reference import material_from_image
from pinid.synth.scenes import seller_photo
from tests.support import corrupt_files, draw_pin_image, run


def turn_hue(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Another colourway: every hue turned in Lab at equal lightness."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    a, b = lab[..., 1] - 128, lab[..., 2] - 128
    angle = np.deg2rad(degrees)
    lab[..., 1], lab[..., 2] = a * np.cos(angle) - b * np.sin(angle) + 128, a * np.sin(angle) + b * np.cos(angle) + 128
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def captioned(data: bytes, text: str = "SAMPLE") -> bytes:
    """A re-uploader's watermark across the lower part of the photo."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    ImageDraw.Draw(image).text((image.width // 12, image.height * 4 // 5), text, fill=(255, 255, 255),
                               font=ImageFont.load_default(size=image.width // 9))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def reuploaded(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    image.resize((image.width * 2 // 3, image.height * 2 // 3)).save(out, format="JPEG", quality=70)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seller photos: pin 1 by two sellers and a re-upload, pins 2 and 3 (same watermark), pin 1's colourway."""
    folder = tmp_path_factory.mktemp("local-dedup") / "photos"
    folder.mkdir()
    art = {1: np.asarray(draw_pin_image(1, 256)), 2: np.asarray(draw_pin_image(2, 256)),
           3: np.asarray(draw_pin_image(3, 256))}
    art[4] = turn_hue(art[1], 120)  # pin 1 in another colourway
    material = {key: material_from_image(rgb, size=256) for key, rgb in art.items()}
    shots = {"pin1-seller-a": seller_photo(material[1], np.random.default_rng([7, 0])),
             "pin1-seller-b": seller_photo(material[1], np.random.default_rng([7, 1])),
             "pin2": captioned(seller_photo(material[2], np.random.default_rng([7, 2]))),
             "pin3": captioned(seller_photo(material[3], np.random.default_rng([7, 3]))),
             "pin1-colourway": seller_photo(material[4], np.random.default_rng([7, 4]))}
    shots["pin1-seller-a-reupload"] = reuploaded(shots["pin1-seller-a"])
    for name, data in shots.items():
        (folder / f"{name}.jpg").write_bytes(data)
    return folder


def group_of(rows) -> dict[str, str]:  # noqa: ANN001
    return {Path(row.listing_id).stem: row.group_id for row in rows}


def open_caches(folder: Path) -> tuple[EmbeddingCache, object]:
    return EmbeddingCache.open(folder, PhotoHashOnly().identity()), open_feature_cache(folder)


def test_one_pin_from_two_sellers_is_grouped_and_other_pins_stay_apart(photos: Path, tmp_path: Path) -> None:
    cache, features = open_caches(tmp_path / "cache")
    with features:
        report = dedup_local(read_listings(photos), cache, features, DedupOptions(mode="pin"))
    group = group_of(report.rows)
    reason = {Path(row.listing_id).stem: row.reason for row in report.rows}
    assert group["pin1-seller-a"] == group["pin1-seller-b"] == group["pin1-seller-a-reupload"]
    # one of the re-uploaded pair represents the group; the other is its same photo, the other seller's same pin
    assert sorted([reason["pin1-seller-a"], reason["pin1-seller-a-reupload"]]) == ["representative", "same_photo"]
    assert reason["pin1-seller-b"] == "same_pin"
    others = [group["pin2"], group["pin3"], group["pin1-colourway"]]
    assert len(set(others)) == 3 and group["pin1-seller-a"] not in others  # watermark shared, colourway
    assert all(row.score is None for row in report.rows)  # no model, no cosine
    assert report.encoded == 6 and report.stats["groups"] == 1


def test_photo_mode_with_no_model_groups_the_reupload_only(photos: Path, tmp_path: Path) -> None:
    cache = EmbeddingCache.open(tmp_path / "cache", PhotoHashOnly().identity())
    report = dedup_local(read_listings(photos), cache, None, DedupOptions(mode="photo"))
    group = group_of(report.rows)
    assert group["pin1-seller-a"] == group["pin1-seller-a-reupload"] != group["pin1-seller-b"]
    assert not (tmp_path / "cache" / "local-features").exists()  # photo mode extracts no local features


def test_rerun_extracts_only_new_files(photos: Path, tmp_path: Path) -> None:
    listings = tmp_path / "listings"
    shutil.copytree(photos, listings)
    (listings / "pin1-colourway.jpg").unlink()
    cache, features = open_caches(tmp_path / "cache")
    with features:
        assert dedup_local(read_listings(listings), cache, features, DedupOptions(mode="pin")).encoded == 5
    cache, features = open_caches(tmp_path / "cache")  # a new run, a new process's view of the cache
    with features:
        again = dedup_local(read_listings(listings), cache, features, DedupOptions(mode="pin"))
    assert (again.encoded, again.cached) == (0, 5)
    shutil.copy(photos / "pin1-colourway.jpg", listings / "new.jpg")
    cache, features = open_caches(tmp_path / "cache")
    with features:
        more = dedup_local(read_listings(listings), cache, features, DedupOptions(mode="pin"))
    assert (more.encoded, more.cached) == (1, 5)
    assert group_of(more.rows)["pin1-seller-a"] == group_of(more.rows)["pin1-seller-b"]


def test_unreadable_files_still_get_rows(photos: Path, tmp_path: Path) -> None:
    listings = tmp_path / "listings"
    shutil.copytree(photos, listings)
    broken = corrupt_files(listings)
    cache, features = open_caches(tmp_path / "cache")
    with features:
        report = dedup_local(read_listings(listings), cache, features, DedupOptions(mode="pin"))
    rows = {Path(row.listing_id).name: row for row in report.rows}
    assert len(rows) == 6 + len(broken)
    for path in broken:
        assert rows[path.name].reason == "unreadable" and rows[path.name].error and not rows[path.name].group_id
    assert rows["pin1-seller-b.jpg"].group_id == rows["pin1-seller-a.jpg"].group_id
    assert report.stats["unreadable"] == len(broken)


def test_colour_check_tells_a_colourway_from_other_light() -> None:
    """The same photo in other light (white balance, exposure) keeps its hues; a colourway turns them."""
    photo = np.asarray(load_image(seller_photo(material_from_image(np.asarray(draw_pin_image(5, 256)), size=256),
                                               np.random.default_rng(3))))
    warmer = np.clip(photo.astype(np.float32) * [1.12, 1.0, 0.85] * 0.8, 0, 255).astype(np.uint8)
    config = LocalDedupConfig()
    differences = []
    for other in (warmer, turn_hue(photo, 120)):
        found = match_pair(*(query_features(Image.fromarray(rgb), config=config.feature_config())
                             for rgb in (photo, other)), config)
        assert found.aligned and found.distinct_inliers >= config.min_distinct_inliers
        labs = [cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB) for rgb in (photo, other)]
        differences.append(hue_difference(labs[0], labs[1], found, 1.0, 1.0, config))
    assert differences[0] <= config.max_hue_difference_deg < differences[1]


def test_cli_as_a_user_types_it(photos: Path, tmp_path: Path) -> None:
    pinid = Path(sys.executable).parent / "pinid"
    command = [str(pinid)] if pinid.exists() else [sys.executable, "-c", "from pinid.cli import main; main()"]
    out = tmp_path / "groups.csv"
    done = subprocess.run([*command, "dedup", str(photos), "--mode", "pin", "--encoder", "local", "-o", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PINID_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = done.stdout  # with -o the summary is the only output
    assert "6 listings: 1 duplicate groups covering 3 listings" in summary and "encoded 6" in summary
    with open(out, newline="", encoding="utf-8") as handle:
        rows = {Path(row["listing_id"]).stem: row for row in csv.DictReader(handle)}
    assert rows["pin1-seller-b"]["group_id"] == rows["pin1-seller-a"]["group_id"] != rows["pin2"]["group_id"]
    assert rows["pin1-seller-b"]["score"] == ""  # no cosine without a model
    assert (tmp_path / "pinid-dedup-cache" / "local-features" / "listings").is_dir()


def test_cli_refuses_what_needs_a_model(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    local = ["dedup", photos, "--encoder", "local", "--cache", tmp_path / "cache"]
    for extra, named in ((["--model", "ViT-B-32"], "--model"), (["--threshold", "0.9"], "--threshold"),
                         (["--against", tmp_path / "index"], "--against")):
        code, _, err = run(capsys, *local, *extra)
        assert code == 2 and named in err and len(err.strip().splitlines()) == 1
