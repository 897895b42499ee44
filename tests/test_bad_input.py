"""The bad-input corpus: every case a careless or hostile user found, fed to the CLI as a user types it.

Each case asserts: no traceback, one `pinid: error:` line where it fails, the documented exit code,
and a previously built index left byte-identical (nothing is lost).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from tests.support import corrupt_files, draw_pin_image, run
from tests.support import write_catalogue as _catalogue

Case = Callable[[Path, Path], list[str]]  # (work dir, previous index) -> argv


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# ------------------------------------------------------------------ build-index
def missing_catalogue(work: Path, index: Path) -> list[str]:
    return ["build-index", str(work / "nowhere"), "-o", str(index), "--encoder", "local"]


def empty_catalogue(work: Path, index: Path) -> list[str]:
    (work / "empty").mkdir()
    return ["build-index", str(work / "empty"), "-o", str(index), "--encoder", "local"]


def only_corrupt_images(work: Path, index: Path) -> list[str]:
    for bad in corrupt_files(work / "bad" / "pin-0"):
        assert bad.exists()
    return ["build-index", str(work / "bad"), "-o", str(index), "--encoder", "local"]


def output_is_the_catalogue_with_a_manifest(work: Path, index: Path) -> list[str]:
    catalogue = _catalogue(work / "cat")
    (catalogue / "manifest.json").write_text("{}")
    return ["build-index", str(catalogue), "-o", str(catalogue), "--encoder", "local"]


def output_inside_the_catalogue(work: Path, index: Path) -> list[str]:
    catalogue = _catalogue(work / "cat")
    return ["build-index", str(catalogue), "-o", str(catalogue / "index"), "--encoder", "local"]


def output_is_dot(work: Path, index: Path) -> list[str]:
    os.chdir(work)
    return ["build-index", str(_catalogue(work / "cat")), "-o", ".", "--encoder", "local"]


def output_in_proc(work: Path, index: Path) -> list[str]:
    return ["build-index", str(_catalogue(work / "cat")), "-o", "/proc/pinid-x", "--encoder", "local"]


def output_under_a_file(work: Path, index: Path) -> list[str]:
    (work / "file").write_text("a file")
    return ["build-index", str(_catalogue(work / "cat")), "-o", str(work / "file" / "x"), "--encoder", "local"]


def manifest_without_columns(work: Path, index: Path) -> list[str]:
    (work / "pins.csv").write_text("identifier,title\n1,a\n")
    return ["build-index", str(work / "pins.csv"), "-o", str(index), "--encoder", "local"]


def jsonl_with_a_huge_integer(work: Path, index: Path) -> list[str]:
    draw_pin_image(0).save(work / "a.png")
    (work / "pins.jsonl").write_text(json.dumps({"id": "a", "name": "A", "image": "a.png"})[:-1]
                                     + ', "n": ' + "9" * 5000 + "}\n")
    return ["build-index", str(work / "pins.jsonl"), "-o", str(index), "--encoder", "local"]


def jsonl_nested_too_deep(work: Path, index: Path) -> list[str]:
    draw_pin_image(0).save(work / "a.png")
    (work / "pins.jsonl").write_text('{"id": "a", "name": "A", "image": "a.png", "x": ' + "[" * 100_000
                                     + "]" * 100_000 + "}\n")
    return ["build-index", str(work / "pins.jsonl"), "-o", str(index), "--encoder", "local"]


def pin_json_with_a_huge_integer(work: Path, index: Path) -> list[str]:  # builds; metadata ignored and listed
    catalogue = _catalogue(work / "cat")
    (catalogue / "pin-0" / "pin.json").write_text('{"name": "A", "n": ' + "9" * 5000 + "}")
    return ["build-index", str(catalogue), "-o", str(work / "new-index"), "--encoder", "local"]


def non_utf8_folder_name(work: Path, index: Path) -> list[str]:  # builds; the odd folder is skipped
    catalogue = _catalogue(work / "cat")
    odd = os.path.join(os.fsencode(catalogue), b"pin-\xff")
    os.mkdir(odd)
    draw_pin_image(7).save(os.fsdecode(os.path.join(odd, b"a.png")))
    return ["build-index", str(catalogue), "-o", str(work / "new-index"), "--encoder", "local"]


# --------------------------------------------------------------------- identify
def _photo(work: Path) -> Path:
    photo = work / "photo.png"
    draw_pin_image(0).save(photo)
    return photo


def corrupt_photo(work: Path, index: Path) -> list[str]:
    return ["identify", str(corrupt_files(work / "bad")[1]), "-i", str(index)]


def truncated_photo(work: Path, index: Path) -> list[str]:
    return ["identify", str(corrupt_files(work / "bad")[0]), "-i", str(index)]


def decompression_bomb(work: Path, index: Path) -> list[str]:
    bomb = work / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # 400 MP: over Pillow's guard, a few KB on disk
    return ["identify", str(bomb), "-i", str(index)]


def exotic_modes(work: Path, index: Path) -> list[str]:  # all answer
    base = draw_pin_image(0)
    base.convert("CMYK").save(work / "cmyk.jpg")
    base.convert("P").save(work / "palette.png")
    Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257)).save(work / "sixteen.png")
    base.convert("LA").save(work / "grey-alpha.png")
    return ["identify", str(work / "cmyk.jpg"), str(work / "palette.png"), str(work / "sixteen.png"),
            str(work / "grey-alpha.png"), "-i", str(index)]


def index_missing(work: Path, index: Path) -> list[str]:
    return ["identify", str(_photo(work)), "-i", str(work / "no-index")]


def index_with_damaged_manifest(work: Path, index: Path) -> list[str]:
    copy = work / "copy"
    shutil.copytree(index, copy)
    (copy / "manifest.json").write_text('{"format": "pinid-index", "format_version": 2}')
    return ["identify", str(_photo(work)), "-i", str(copy)]


def k_zero(work: Path, index: Path) -> list[str]:
    return ["identify", str(_photo(work)), "-i", str(index), "-k", "0"]


def no_verify_on_a_local_index(work: Path, index: Path) -> list[str]:
    return ["identify", str(_photo(work)), "-i", str(index), "--no-verify"]


def annotate_onto_the_photo(work: Path, index: Path) -> list[str]:
    photo = _photo(work)
    return ["identify", str(photo), "-i", str(index), "--multi", "--annotate", str(photo)]


def annotate_into_a_directory(work: Path, index: Path) -> list[str]:
    (work / "out").mkdir()
    return ["identify", str(_photo(work)), "-i", str(index), "--multi", "--annotate", str(work / "out")]


def annotate_to_empty_path(work: Path, index: Path) -> list[str]:
    return ["identify", str(_photo(work)), "-i", str(index), "--multi", "--annotate", ""]


def annotate_to_a_fifo(work: Path, index: Path) -> list[str]:
    # a special file of our own: a test must never risk a real device (/dev/null, /dev/full) if the fix regresses
    os.mkfifo(work / "pipe")
    return ["identify", str(_photo(work)), "-i", str(index), "--multi", "--annotate", str(work / "pipe")]


# ------------------------------------------------------------------ info, dedup
def info_on_a_manifest_missing_fields(work: Path, index: Path) -> list[str]:
    (work / "fake").mkdir()
    (work / "fake" / "manifest.json").write_text('{"format": "pinid-index", "format_version": 2, "counts": {}}')
    return ["info", str(work / "fake")]


def info_on_a_photo_folder(work: Path, index: Path) -> list[str]:
    _photo(work)
    return ["info", str(work)]


def dedup_missing_listings(work: Path, index: Path) -> list[str]:
    return ["dedup", str(work / "nowhere"), "--against", str(index)]


def dedup_listings_without_columns(work: Path, index: Path) -> list[str]:
    (work / "listings.csv").write_text("id,file\n1,a.png\n")
    return ["dedup", str(work / "listings.csv"), "--against", str(index), "-o", str(work / "out.csv")]


def dedup_against_a_local_index(work: Path, index: Path) -> list[str]:
    _photo(work)
    return ["dedup", str(work), "--against", str(index), "-o", str(work / "verdicts.csv")]


CASES: dict[str, tuple[Case, int]] = {
    "missing catalogue": (missing_catalogue, 2),
    "empty catalogue": (empty_catalogue, 4),
    "only corrupt images": (only_corrupt_images, 4),
    "-o is the catalogue holding a manifest.json": (output_is_the_catalogue_with_a_manifest, 2),
    "-o inside the catalogue": (output_inside_the_catalogue, 2),
    "-o .": (output_is_dot, 2),
    "-o /proc/x": (output_in_proc, 2),
    "-o file/x": (output_under_a_file, 2),
    "manifest without columns": (manifest_without_columns, 4),
    "JSONL with a 5000-digit integer": (jsonl_with_a_huge_integer, 4),
    "JSONL nested 100k deep": (jsonl_nested_too_deep, 4),
    "pin.json with a 5000-digit integer": (pin_json_with_a_huge_integer, 0),
    "non-UTF-8 folder name": (non_utf8_folder_name, 0),
    "corrupt photo": (corrupt_photo, 3),
    "truncated photo": (truncated_photo, 3),
    "decompression bomb": (decompression_bomb, 3),
    "exotic image modes": (exotic_modes, 0),
    "index missing": (index_missing, 5),
    "index with a damaged manifest": (index_with_damaged_manifest, 5),
    "k 0": (k_zero, 2),
    "--no-verify on a local index": (no_verify_on_a_local_index, 2),
    "--annotate onto the photo": (annotate_onto_the_photo, 2),
    "--annotate into a directory": (annotate_into_a_directory, 2),
    "--annotate ''": (annotate_to_empty_path, 2),
    "--annotate a fifo": (annotate_to_a_fifo, 2),
    "info on a manifest missing fields": (info_on_a_manifest_missing_fields, 5),
    "info on a photo folder": (info_on_a_photo_folder, 5),
    "dedup missing listings": (dedup_missing_listings, 2),
    "dedup listings without columns": (dedup_listings_without_columns, 4),
    "dedup --against a local index": (dedup_against_a_local_index, 2),
}


@pytest.fixture(scope="module")
def previous_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pinid.catalogue import read_catalogue
    from pinid.index import PinIndex

    root = tmp_path_factory.mktemp("previous")
    return PinIndex.build(read_catalogue(_catalogue(root / "cat", pins=3)), root / "index", None).path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, previous_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    case, expected = CASES[name]
    before = _fingerprint(previous_index)
    work = tmp_path / "work"
    work.mkdir()
    argv = case(work, previous_index)
    code, out, err = run(capsys, *argv)
    assert "Traceback" not in out + err
    assert code == expected, f"{name}: exit {code}, expected {expected}; stderr: {err}"
    errors = [line for line in err.splitlines() if line.startswith("pinid: error:")]
    if expected != 0:
        assert len(errors) >= 1 and all("\n" not in line for line in errors)
    assert _fingerprint(previous_index) == before, "the previous index changed"
    if name == "-o is the catalogue holding a manifest.json":
        assert (work / "cat" / "pin-0" / "a.png").is_file() and (work / "cat" / "manifest.json").is_file()
    if name == "--annotate onto the photo":
        assert Image.open(work / "photo.png").size == draw_pin_image(0).size
    if name == "--annotate a fifo":
        assert (work / "pipe").is_fifo()
