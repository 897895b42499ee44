"""pinid.dedup.rows: result rows as CSV (formula cells neutralised) or JSON (raw, valid), files and stdout."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pinid.dedup.group import GroupRow
from pinid.dedup.rows import ROW_FIELDS, csv_cell, format_rows, write_rows

from tests.support import draw_pin_image, run

HOSTILE = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _rows() -> list[GroupRow]:
    rows = [GroupRow(listing_id, f"{listing_id}.jpg", "g000001", 2, HOSTILE[0], -0.25, 3, "same_pin")
            for listing_id in HOSTILE]
    rows.append(GroupRow("plain", "=cmd|' /C calc'!A0", "", 0, "", None, None, "unreadable", "-oops"))
    rows.append(GroupRow("nan", "nan.jpg", "g000002", 1, "nan", float("nan"), 0, "unique"))
    return rows


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_like_text_is_quoted(value: str) -> None:
    assert csv_cell(value) == "'" + value


def test_numbers_and_plain_text_stay_as_they_are() -> None:
    assert csv_cell(-0.25) == -0.25 and csv_cell(-3) == -3 and csv_cell(None) == ""
    assert csv_cell("pin-001.png") == "pin-001.png" and csv_cell("") == ""


def test_csv_file_and_text_neutralise_user_cells_but_keep_numbers(tmp_path: Path) -> None:
    write_rows(_rows(), tmp_path / "out.csv", ROW_FIELDS)
    for text in ((tmp_path / "out.csv").read_bytes().decode("utf-8"), format_rows(_rows(), ROW_FIELDS)):
        read = list(csv.DictReader(io.StringIO(text, newline="")))
        for row, listing_id in zip(read, HOSTILE):
            assert row["listing_id"] == "'" + listing_id and row["representative"] == "'" + HOSTILE[0]
            assert row["score"] == "-0.25" and row["phash_distance"] == "3"  # pinid's numbers stay numbers
        assert read[len(HOSTILE)]["image"].startswith("'=") and read[len(HOSTILE)]["error"] == "'-oops"
        assert read[len(HOSTILE)]["score"] == "" and read[-1]["listing_id"] == "nan"
        for row in read:
            assert not any(str(value).startswith(("=", "+", "@", "\t", "\r")) for value in row.values())
            assert not any(str(value).startswith("-") and value != "-0.25" for value in row.values())


def test_json_keeps_text_raw_and_is_valid(tmp_path: Path) -> None:
    write_rows(_rows(), tmp_path / "out.json", ROW_FIELDS, as_json=True)
    for text in ((tmp_path / "out.json").read_text(encoding="utf-8"), format_rows(_rows(), ROW_FIELDS, as_json=True)):
        records = _strict_json(text)
        assert [record["listing_id"] for record in records[:len(HOSTILE)]] == HOSTILE
        assert records[0]["score"] == -0.25 and records[-1]["score"] is None  # NaN -> null, not NaN


def test_cli_neutralises_formula_cells_on_stdout_and_in_files(tiny_model_dir: Path, tmp_path: Path,
                                                             capsys) -> None:
    draw_pin_image(1).save(tmp_path / "a.png")
    with open(tmp_path / "listings.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["listing_id", "image"])
        writer.writerow(["=1+2", "a.png"])
        writer.writerow(["@evil", "=missing.png"])
    args = ["dedup", tmp_path / "listings.csv", "--model", f"local-dir:{tiny_model_dir}", "--threshold", "1",
            "--cache", tmp_path / "cache", "-q"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    code, _, err = run(capsys, *args, "-o", tmp_path / "groups.csv")
    assert code == 0, err
    for text in (out, (tmp_path / "groups.csv").read_bytes().decode("utf-8")):
        rows = {row["listing_id"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}
        assert set(rows) == {"'=1+2", "'@evil"}
        assert rows["'@evil"]["reason"] == "unreadable" and rows["'@evil"]["image"].startswith(str(tmp_path))
        assert rows["'=1+2"]["representative"] == "'=1+2"
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    assert {record["listing_id"] for record in _strict_json(out)} == {"=1+2", "@evil"}
