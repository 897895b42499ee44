"""Reading listings (pinid.dedup.listings): folders and CSV/JSONL exports, through pinid.tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pinid.dedup import read_listings
from pinid.errors import CatalogueError, InputError

from tests.support import draw_pin_image


def _image(path: Path | bytes, seed: int = 0) -> None:
    draw_pin_image(seed).save(Path(os.fsdecode(path)) if isinstance(path, bytes) else path, "PNG")


def test_csv_and_jsonl_with_bom_and_stray_header_spaces(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_bytes(b"\xef\xbb\xbf listing_id , image \r\na,x.jpg\r\nb,y.jpg\r\n")
    (tmp_path / "l.jsonl").write_bytes(b'\xef\xbb\xbf{"listing_id": "a", "image": "x.jpg"}\n'
                                       b'{"listing_id": 7, "image": "/abs/y.jpg"}\n')
    assert [(i.listing_id, i.image) for i in read_listings(tmp_path / "l.csv")] == [
        ("a", tmp_path / "x.jpg"), ("b", tmp_path / "y.jpg")]
    assert [(i.listing_id, i.image) for i in read_listings(tmp_path / "l.jsonl")] == [
        ("a", tmp_path / "x.jpg"), ("7", Path("/abs/y.jpg"))]


@pytest.mark.parametrize("name, text, message", [
    ("l.csv", "listing_id,image\na,x.jpg\na,y.jpg\n", r"l\.csv line 3: listing_id 'a' appears twice"),
    ("l.csv", "listing_id\na\n", r"missing column\(s\) image"),
    ("l.csv", "listing_id,image\na,\n", r"l\.csv line 2: empty listing_id or image"),
    ("l.csv", "listing_id,image\na,x.jpg,oops\n", r"l\.csv line 2: a cell under no named column"),
    ("l.jsonl", '{"listing_id": "a", "image": "x.jpg"}\n{"listing_id": "b"}\n', r"l\.jsonl line 2: needs"),
    ("l.jsonl", '{"listing_id": "a\\u001b[2J", "image": "x.jpg"}\n', r"a\\x1b\[2J has control characters"),
    ("l.jsonl", '{"listing_id": ' + "9" * 5000 + ', "image": "x.jpg"}\n', r"l\.jsonl line 1: integer of 5000"),
    ("l.jsonl", "[" * 100_000 + "\n", r"l\.jsonl line 1: nested more than"),
])
def test_malformed_listing_files_are_catalogue_errors_naming_the_line(
        tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(CatalogueError, match=message) as caught:
        read_listings(tmp_path / name)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_not_utf8_listing_file_is_a_catalogue_error(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_bytes(b"listing_id,image\ncaf\xe9,x.jpg\n")
    with pytest.raises(CatalogueError, match=r"l\.csv line 2: not UTF-8"):
        read_listings(tmp_path / "l.csv")


def _odd_folder(root: Path) -> Path:
    root.mkdir()
    _image(root / "good.png")
    _image(os.fsencode(root) + b"/bad-\xff.png", 1)
    (root / "gone.jpg").symlink_to(root / "nowhere.jpg")
    (root / "notes.txt").symlink_to(root / "nowhere.txt")  # not an image name: not a listing, not reported
    return root


def test_folder_skips_non_utf8_names_and_broken_links_with_reasons(tmp_path: Path) -> None:
    root = _odd_folder(tmp_path / "listings")
    skipped: list[tuple[str, str]] = []
    listings = read_listings(root, skipped)
    assert [item.listing_id for item in listings] == ["good.png"]
    assert sorted(skipped) == [(f"{root}/bad-\\xff.png", "name is not valid UTF-8"),
                               (f"{root}/gone.jpg", "broken symbolic link")]


def test_folder_problems_are_an_error_when_the_caller_cannot_list_them(tmp_path: Path) -> None:
    root = _odd_folder(tmp_path / "listings")
    with pytest.raises(CatalogueError, match=r"2 such file\(s\)") as caught:
        read_listings(root)
    str(caught.value).encode("utf-8")  # printable: the bad byte is shown as \xff


def test_unreadable_sub_folder_and_control_characters_in_file_names(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "listings"
    (root / "locked").mkdir(parents=True)
    _image(root / "locked" / "x.png")
    _image(root / "ok.png", 1)
    _image(root / "evil\x1b[2J.png", 2)
    real = os.scandir

    def scandir(path: Any = ".") -> Any:  # chmod 000 does not stop root, who runs the tests
        if Path(path) == root / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    skipped: list[tuple[str, str]] = []
    assert [item.listing_id for item in read_listings(root, skipped)] == ["ok.png"]
    assert sorted(skipped) == [(f"{root}/evil\\x1b[2J.png", "listing id (file name) has control characters"),
                               (f"{root}/locked", "folder cannot be read (Permission denied)")]
    with pytest.raises(CatalogueError, match=r"listings .*locked cannot be read \(Permission denied\)"):
        read_listings(root / "locked", skipped)


def test_listings_path_that_is_not_utf8_or_missing_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"x-\\xff: the path is not valid UTF-8"):
        read_listings(os.fsdecode(os.fsencode(tmp_path) + b"/x-\xff"))
    with pytest.raises(InputError, match="do not exist"):
        read_listings(tmp_path / "missing")


def test_cli_dedup_lists_skipped_folder_entries_and_goes_on(tmp_path, capsys, tiny_model_dir) -> None:
    from tests.support import draw_pin_image, run

    folder = tmp_path / "listings"
    folder.mkdir()
    draw_pin_image(1).save(folder / "a.png")
    draw_pin_image(2).save(folder / "b.png")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    code, out, err = run(capsys, "dedup", str(folder), "--model", f"local-dir:{tiny_model_dir}", "--threshold", "1",
                         "--cache", str(tmp_path / "cache"))
    assert code == 0, err
    assert "gone.png" in err and "broken symbolic link" in err
    assert "a.png" in out and "b.png" in out
