"""pinid dedup --against: new listings matched to an existing index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pinid.dedup import match_against, read_listings
from pinid.encoder.cache import EmbeddingCache
from pinid.errors import LocalOnlyError
from pinid.index import PinIndex

from tests.support import draw_pin_image, run


def reupload(image: Image.Image, path: Path, size: int = 100) -> Path:
    """What a re-uploader does: shrink and re-compress as JPEG."""
    image.resize((size, size), Image.Resampling.BILINEAR).save(path, quality=60)
    return path


def test_against_index_reports_new_and_duplicates(make_catalogue, tiny_model_dir: Path, tmp_path: Path,
                                                  capsys) -> None:
    catalogue = make_catalogue(pins=4, images_per_pin=1)
    code, _, err = run(capsys, "build-index", catalogue, "-o", tmp_path / "idx", "--model",
                       f"local-dir:{tiny_model_dir}", "-q")
    assert code == 0, err
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(catalogue / "pin-001" / "img0.png", new / "copy.png")
    reupload(Image.open(catalogue / "pin-002" / "img0.png"), new / "reup.jpg")
    draw_pin_image(4242).save(new / "fresh.png")
    (new / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    code, out, err = run(capsys, "dedup", "--against", tmp_path / "idx", new, "--threshold", "1", "--json")
    assert code == 0, err
    rows = {row["listing_id"]: row for row in json.loads(out)}
    assert rows["copy.png"]["status"] == "duplicate" and rows["copy.png"]["reason"] == "exact_file"
    assert rows["copy.png"]["match_pin_id"] == "pin-001" and rows["copy.png"]["score"] == pytest.approx(1, abs=1e-4)
    assert rows["reup.jpg"]["reason"] == "same_photo" and rows["reup.jpg"]["match_pin_id"] == "pin-002"
    assert rows["fresh.png"]["status"] == "new" and rows["broken.jpg"]["status"] == "unreadable"
    assert "1 new" in err and "2 duplicates" in err and (new.parent / "pinid-dedup-cache").is_dir()


def test_against_a_local_features_index_is_an_input_error(make_catalogue, tmp_path: Path, capsys) -> None:
    catalogue = make_catalogue(pins=2, images_per_pin=1)
    code, _, err = run(capsys, "build-index", catalogue, "-o", tmp_path / "idx", "--encoder", "local", "-q")
    assert code == 0, err
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(catalogue / "pin-001" / "img0.png", new / "copy.png")
    code, out, err = run(capsys, "dedup", "--against", tmp_path / "idx", new)
    assert code == 2 and out == ""
    assert err.startswith("pinid: error:") and "local features only" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pinid-dedup-cache").exists()  # refused before any work

    index = PinIndex.load(tmp_path / "idx")
    cache = EmbeddingCache.open(tmp_path / "cache", {"model": "stand-in"})
    with pytest.raises(LocalOnlyError, match="local features only"):
        match_against(index, read_listings(new), cache)
