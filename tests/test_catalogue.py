from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinid.catalogue import read_catalogue
from pinid.errors import CatalogueError, InputError

from tests.support import draw_pin_image


def test_folder_catalogue_reads_names_metadata_and_images(make_catalogue) -> None:
    root = make_catalogue(pins=3, images_per_pin=2)
    catalogue = read_catalogue(root)
    assert [pin.pin_id for pin in catalogue.pins] == ["pin-000", "pin-001", "pin-002"]
    first = catalogue.pins[0]
    assert first.name == "Pin number 0" and first.metadata == {"series": "test"}
    assert [p.name for p in first.images] == ["img0.png", "img1.png"]
    assert catalogue.image_count == 6 and catalogue.skipped == []


def test_folder_without_pin_json_uses_folder_name_and_skips_strays(tmp_path: Path) -> None:
    (tmp_path / "fox" / "back").mkdir(parents=True)
    draw_pin_image(1).save(tmp_path / "fox" / "front.jpg")
    draw_pin_image(2).save(tmp_path / "fox" / "back" / "b.jpg")
    (tmp_path / "fox" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "empty-pin").mkdir()
    draw_pin_image(3).save(tmp_path / "loose.png")
    (tmp_path / "broken-json").mkdir()
    draw_pin_image(4).save(tmp_path / "broken-json" / "x.png")
    (tmp_path / "broken-json" / "pin.json").write_text("{not json")
    catalogue = read_catalogue(tmp_path)
    pins = {pin.pin_id: pin for pin in catalogue.pins}
    assert set(pins) == {"fox", "broken-json"}
    assert pins["fox"].name == "fox" and len(pins["fox"].images) == 2  # nested folders count, hidden files don't
    assert pins["broken-json"].name == "broken-json"
    reasons = dict(catalogue.skipped)
    assert "outside a pin folder" in reasons[str(tmp_path / "loose.png")]
    assert "no image files" in reasons[str(tmp_path / "empty-pin")]
    assert "unreadable pin.json" in reasons[str(tmp_path / "broken-json" / "pin.json")]


def test_csv_manifest_groups_rows_and_keeps_extra_columns(tmp_path: Path) -> None:
    for name in ("a1.png", "a2.png", "b.png"):
        draw_pin_image(len(name)).save(tmp_path / name)
    (tmp_path / "pins.csv").write_text(
        "id,name,image,edition,price\n"
        "A,Alpha pin,a1.png,LE 100,12\n"
        "A,Alpha pin,a2.png,LE 100,12\n"
        "B,Beta pin,b.png,open,8\n"
        "C,Gamma pin,missing.png,open,5\n"
        ",No id,b.png,,\n")
    catalogue = read_catalogue(tmp_path / "pins.csv")
    pins = {pin.pin_id: pin for pin in catalogue.pins}
    assert set(pins) == {"A", "B"}
    assert len(pins["A"].images) == 2 and pins["A"].metadata == {"edition": "LE 100", "price": "12"}
    skipped = " ".join(f"{where} {why}" for where, why in catalogue.skipped)
    assert "missing.png" in skipped and "C" in skipped and "empty id" in skipped


def test_jsonl_manifest_with_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    draw_pin_image(5).save(tmp_path / "img" / "x.png")
    (tmp_path / "pins.jsonl").write_text(
        json.dumps({"id": "X", "name": "Ex", "image": "img/x.png", "tags": ["cat", "gold"]}) + "\n\n")
    catalogue = read_catalogue(tmp_path / "pins.jsonl")
    assert catalogue.pins[0].metadata == {"tags": ["cat", "gold"]}
    assert catalogue.pins[0].images == (tmp_path / "img" / "x.png",)


def test_manifest_missing_a_column_names_it(tmp_path: Path) -> None:
    (tmp_path / "pins.csv").write_text("id,image\nA,a.png\n")
    with pytest.raises(CatalogueError, match="missing column.*name"):
        read_catalogue(tmp_path / "pins.csv")


def test_jsonl_bad_line_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "pins.jsonl").write_text('{"id": "A", "name": "a", "image": "a.png"}\n{oops\n')
    with pytest.raises(CatalogueError, match="line 2"):
        read_catalogue(tmp_path / "pins.jsonl")


def test_empty_catalogues_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogueError, match="no pins"):
        read_catalogue(tmp_path / "empty")
    (tmp_path / "empty.csv").write_text("id,name,image\n")
    with pytest.raises(CatalogueError, match="no pins"):
        read_catalogue(tmp_path / "empty.csv")


def test_wrong_paths_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_catalogue(tmp_path / "nope")
    (tmp_path / "pins.xlsx").write_bytes(b"PK")
    with pytest.raises(InputError, match="folder, a .csv or a .jsonl"):
        read_catalogue(tmp_path / "pins.xlsx")
