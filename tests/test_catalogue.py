from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------ issue 9: bad input
def _pin(root: Path, pin_id: str | bytes, seed: int = 0, image: str | bytes = "a.png") -> Path:
    """A pin folder with one image; bytes names are written as they are (need not be UTF-8)."""
    folder = Path(os.fsdecode(os.path.join(os.fsencode(root), os.fsencode(pin_id))))
    folder.mkdir(parents=True, exist_ok=True)
    draw_pin_image(seed).save(Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(image)))), "PNG")
    return folder


def _reasons(catalogue) -> dict[str, str]:
    return {where: why for where, why in catalogue.skipped}


def test_names_that_are_not_utf8_are_skipped_with_a_reason(tmp_path: Path) -> None:
    _pin(tmp_path, "good")
    _pin(tmp_path, "good", seed=1, image=b"photo-\xff.png")
    _pin(tmp_path, b"pin-\xff", seed=2)
    catalogue = read_catalogue(tmp_path)
    assert [pin.pin_id for pin in catalogue.pins] == ["good"]
    assert [p.name for p in catalogue.pins[0].images] == ["a.png"]
    reasons = _reasons(catalogue)
    assert reasons[f"{tmp_path}/pin-\\xff"] == "name is not valid UTF-8"
    assert reasons[f"{tmp_path}/good/photo-\\xff.png"] == "name is not valid UTF-8"
    for where, why in catalogue.skipped:
        (where + why).encode("utf-8")  # printable as it is


def test_cli_build_with_non_utf8_names_succeeds_and_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.support import run

    _pin(tmp_path / "cat", "good")
    _pin(tmp_path / "cat", b"pin-\xff", seed=2)
    code, out, err = run(capsys, "build-index", tmp_path / "cat", "-o", tmp_path / "idx", "--encoder", "local")
    assert code == 0, err
    assert "Traceback" not in out + err and "pin-\\xff: name is not valid UTF-8" in out


def test_catalogue_path_that_is_not_utf8_is_an_input_error(tmp_path: Path) -> None:
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/cat-\xff"))
    _pin(root, "good")
    with pytest.raises(InputError, match=r"cat-\\xff: the path is not valid UTF-8") as caught:
        read_catalogue(root)
    str(caught.value).encode("utf-8")


def _deny(monkeypatch: pytest.MonkeyPatch, *denied: Path) -> None:
    """os.scandir raises PermissionError for ``denied`` (chmod 000 does nothing to root, who runs the tests)."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_pin_folder_is_skipped_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pin(tmp_path, "good")
    locked = _pin(tmp_path, "locked", seed=1)
    partly = _pin(tmp_path, "partly", seed=2)
    _pin(partly, "back", seed=3)
    _deny(monkeypatch, locked, partly / "back")
    catalogue = read_catalogue(tmp_path)
    pins = {pin.pin_id: pin for pin in catalogue.pins}
    assert set(pins) == {"good", "partly"} and [p.name for p in pins["partly"].images] == ["a.png"]
    reasons = _reasons(catalogue)
    assert reasons[str(locked)] == "pin folder cannot be read (Permission denied)"
    assert reasons[str(partly / "back")] == "folder cannot be read (Permission denied)"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="chmod 000 does not stop root")
def test_chmod_000_pin_folder_is_skipped(tmp_path: Path) -> None:
    _pin(tmp_path, "good")
    locked = _pin(tmp_path, "locked", seed=1)
    locked.chmod(0)
    try:
        catalogue = read_catalogue(tmp_path)
    finally:
        locked.chmod(0o755)
    assert [pin.pin_id for pin in catalogue.pins] == ["good"]
    assert "cannot be read" in _reasons(catalogue)[str(locked)]


@pytest.mark.parametrize("text, reason", [
    ('{"name": "Fox", "id": ' + "9" * 5000 + "}", "integer of 5000 digits"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested more than"),
    (b"\xff\xfe{}", "invalid start byte"),
])
def test_pin_json_with_huge_integer_deep_nesting_or_bad_bytes_is_ignored_with_a_reason(
        tmp_path: Path, text: str | bytes, reason: str) -> None:
    folder = _pin(tmp_path, "fox")
    if isinstance(text, bytes):
        (folder / "pin.json").write_bytes(text)
    else:
        (folder / "pin.json").write_text(text)
    catalogue = read_catalogue(tmp_path)
    assert catalogue.pins[0].name == "fox" and catalogue.pins[0].metadata == {}
    why = _reasons(catalogue)[str(folder / "pin.json")]
    assert why.startswith("unreadable pin.json, metadata ignored") and reason in why and "\n" not in why


@pytest.mark.parametrize("line, reason", [('{"id": "B", "name": "b", "image": "a.png", "n": ' + "9" * 5000 + "}",
                                           "integer of 5000 digits"),
                                          ("[" * 100_000 + "]" * 100_000, "nested more than")])
def test_jsonl_manifest_with_huge_integer_or_deep_nesting_names_file_and_line(
        tmp_path: Path, line: str, reason: str) -> None:
    draw_pin_image(0).save(tmp_path / "a.png")
    (tmp_path / "pins.jsonl").write_text('{"id": "A", "name": "a", "image": "a.png"}\n' + line + "\n")
    with pytest.raises(CatalogueError, match=rf"pins\.jsonl line 2: {reason}") as caught:
        read_catalogue(tmp_path / "pins.jsonl")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_one_id_under_two_names_is_reported_and_the_second_row_skipped(tmp_path: Path) -> None:
    for name in ("a1.png", "a2.png", "a3.png", "a4.png"):
        draw_pin_image(len(name) + int(name[1])).save(tmp_path / name)
    (tmp_path / "pins.csv").write_text("id,name,image\n"
                                       "A,Alpha pin,a1.png\n"
                                       "A,,a2.png\n"              # no name: same pin, another image
                                       "A,Alpha pin,a3.png\n"
                                       "A,Another pin,a4.png\n")  # a second pin given the same id by mistake
    catalogue = read_catalogue(tmp_path / "pins.csv")
    assert catalogue.pins[0].name == "Alpha pin"
    assert [p.name for p in catalogue.pins[0].images] == ["a1.png", "a2.png", "a3.png"]
    assert catalogue.skipped == [("pins.csv line 5", "id A is already named 'Alpha pin' (pins.csv line 2); "
                                                     "row naming it 'Another pin' skipped")]


def test_a_later_row_may_name_an_id_first_given_without_a_name(tmp_path: Path) -> None:
    draw_pin_image(0).save(tmp_path / "a.png")
    (tmp_path / "pins.csv").write_text("id,name,image\nA,,a.png\nA,Alpha,a.png\n")
    catalogue = read_catalogue(tmp_path / "pins.csv")
    assert catalogue.pins[0].name == "Alpha" and catalogue.skipped == []


def test_null_name_falls_back_to_the_id_and_control_characters_are_cleaned(tmp_path: Path) -> None:
    draw_pin_image(0).save(tmp_path / "a.png")
    rows = [{"id": "A", "name": None, "image": "a.png"},
            {"id": "B", "name": "Evil\u001b[2J\u0007 pin\n", "image": "a.png"},
            {"id": "C\u001b[31m", "name": "c", "image": "a.png"},
            {"id": 7, "name": 8, "image": "a.png"}]
    (tmp_path / "pins.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    catalogue = read_catalogue(tmp_path / "pins.jsonl")
    assert [(pin.pin_id, pin.name) for pin in catalogue.pins] == [("A", "A"), ("B", "Evil [2J  pin"), ("7", "8")]
    assert catalogue.skipped == [("pins.jsonl line 3", "id C\\x1b[31m has control characters")]


def test_folder_names_with_control_characters_are_skipped_and_pin_json_names_cleaned(tmp_path: Path) -> None:
    _pin(tmp_path, "bad\x1b[2Jid")
    fox = _pin(tmp_path, "fox", seed=1)
    (fox / "pin.json").write_text(json.dumps({"name": "Fox\r\n\x1b]0;owned\x07", "series": "x"}))
    owl = _pin(tmp_path, "owl", seed=2)
    (owl / "pin.json").write_text('{"name": null}')
    catalogue = read_catalogue(tmp_path)
    assert [(pin.pin_id, pin.name) for pin in catalogue.pins] == [("fox", "Fox   ]0;owned"), ("owl", "owl")]
    assert _reasons(catalogue) == {f"{tmp_path}/bad\\x1b[2Jid": "pin id (folder name) has control characters"}


def test_broken_and_odd_symbolic_links_are_listed_as_skipped(tmp_path: Path) -> None:
    fox = _pin(tmp_path, "fox")
    (fox / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (fox / "device.png").symlink_to("/dev/zero")
    (fox / "folder-link").symlink_to(fox)
    os.mkfifo(fox / "pipe.png")
    (tmp_path / "lost-pin").symlink_to(tmp_path / "nowhere")
    (tmp_path / "linked-pin").symlink_to(fox)  # a symlinked pin folder is a pin
    catalogue = read_catalogue(tmp_path)
    assert [pin.pin_id for pin in catalogue.pins] == ["fox", "linked-pin"]
    assert [p.name for p in catalogue.pins[0].images] == ["a.png"]
    reasons = _reasons(catalogue)
    assert reasons[str(fox / "gone.png")] == "broken symbolic link"
    assert reasons[str(tmp_path / "lost-pin")] == "broken symbolic link"
    assert "not a file" in reasons[str(fox / "device.png")]
    assert "not a file" in reasons[str(fox / "folder-link")]
    assert reasons[str(fox / "pipe.png")] == "not a regular file"


def test_byte_order_marks_are_accepted_in_every_catalogue_file(tmp_path: Path) -> None:
    fox = _pin(tmp_path / "cat", "fox")
    (fox / "pin.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"name": "Fox"}).encode())
    draw_pin_image(0).save(tmp_path / "a.png")
    (tmp_path / "pins.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "A", "name": "Alpha",
                                                                         "image": "a.png"}).encode() + b"\n")
    (tmp_path / "pins.csv").write_bytes(b"\xef\xbb\xbfid, name ,image\nA,Alpha,a.png\n")
    folder = read_catalogue(tmp_path / "cat")
    assert folder.pins[0].name == "Fox" and folder.skipped == []
    for manifest in ("pins.jsonl", "pins.csv"):
        assert [(pin.pin_id, pin.name) for pin in read_catalogue(tmp_path / manifest).pins] == [("A", "Alpha")]


def test_stored_metadata_can_always_be_written_as_json(tmp_path: Path) -> None:
    fox = _pin(tmp_path / "cat", "fox")
    (fox / "pin.json").write_text('{"name": "Fox", "price": NaN, "weight": Infinity, "big": 1e999, '
                                  '"odd": "\\ud800", "tags": [-Infinity]}')
    draw_pin_image(0).save(tmp_path / "a.png")
    (tmp_path / "pins.jsonl").write_text('{"id": "A", "name": "a", "image": "a.png", "price": NaN, '
                                         '"note": "\\udcff"}\n')
    pins = read_catalogue(tmp_path / "cat").pins + read_catalogue(tmp_path / "pins.jsonl").pins
    assert pins[0].metadata == {"price": None, "weight": None, "big": None, "odd": "\ufffd", "tags": [None]}
    for pin in pins:
        json.dumps(pin.metadata, allow_nan=False, ensure_ascii=False).encode("utf-8")


def test_manifest_cells_that_are_missing_or_not_text(tmp_path: Path) -> None:
    draw_pin_image(0).save(tmp_path / "a.png")
    (tmp_path / "pins.csv").write_text("id,name,image,extra\nA,Alpha,a.png\nB,Beta\n,,,\n")
    catalogue = read_catalogue(tmp_path / "pins.csv")
    assert [(pin.pin_id, pin.metadata) for pin in catalogue.pins] == [("A", {"extra": None})]
    assert [why for _, why in catalogue.skipped] == ["empty id or image", "empty id or image"]
