"""pinid.tables: the one CSV/JSONL reader and safe JSON, as every table of user input meets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinid.tables import (MAX_INT_DIGITS, MAX_JSON_DEPTH, TableError, clean_text, dumps, has_control_characters,
                          is_utf8, parse_json, printable, read_rows)


# ------------------------------------------------------------------- parse_json
def test_parse_json_reads_nan_infinity_and_overflowing_floats_as_null() -> None:
    assert parse_json('{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e999, "e": 1.5}') == {
        "a": None, "b": None, "c": None, "d": None, "e": 1.5}


def test_parse_json_accepts_a_byte_order_mark() -> None:
    assert parse_json('\ufeff{"name": "fox"}') == {"name": "fox"}


@pytest.mark.parametrize("text, reason", [
    ("1" * 4301, "integer of 4301 digits"),
    ('{"id": -' + "9" * 5000 + "}", "integer of 5000 digits"),
    ("[" * 100_000 + "]" * 100_000, "nested more than"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested more than"),
    ("{oops", "invalid JSON"),
])
def test_parse_json_refuses_huge_integers_deep_nesting_and_bad_text_with_one_value_error(
        text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_json(text)


def test_parse_json_limits_are_inclusive() -> None:
    assert parse_json("9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    assert parse_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    assert parse_json('"[[[[ in a string is not nesting"') == "[[[[ in a string is not nesting"
    assert parse_json('["a \\" [[[", 1]') == ['a " [[[', 1]


def test_parse_json_replaces_lone_surrogates_so_the_text_can_be_written() -> None:
    value = parse_json('{"name": "bad \\ud800 text", "\\udfff": ["\\ud83d\\ude00"]}')
    assert value == {"name": "bad \ufffd text", "\ufffd": ["\U0001F600"]}  # a proper pair stays an emoji
    dumps(value).encode("utf-8")


def test_dumps_writes_no_nan_and_keeps_text_readable() -> None:
    text = dumps({"a": float("nan"), "b": [float("inf"), 1.0], "c": "café"})
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": "café"} and "café" in text


# -------------------------------------------------------------------- read_rows
def test_csv_header_with_stray_spaces_bom_and_crlf(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbf id , name ,image\r\nA, Alpha ,a.png\r\n\r\nB,Beta,b.png\r\n")
    rows = read_rows(tmp_path / "t.csv", ("id", "name", "image"))
    assert rows == [("t.csv line 2", {"id": "A", "name": " Alpha ", "image": "a.png"}),
                    ("t.csv line 4", {"id": "B", "name": "Beta", "image": "b.png"})]


def test_csv_short_rows_get_none_and_empty_extra_cells_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,name,\nA\nB,Beta,,,\n")
    assert [row for _, row in read_rows(tmp_path / "t.csv")] == [{"id": "A", "name": None},
                                                                  {"id": "B", "name": "Beta"}]


def test_csv_extra_cells_with_text_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,name\nA,Alpha\nB,Beta,surprise\n")
    with pytest.raises(TableError, match=r"t\.csv line 3: a cell under no named column"):
        read_rows(tmp_path / "t.csv")


def test_csv_quoted_cells_keep_newlines_and_line_numbers_follow_the_file(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text('id,note\nA,"two\nlines"\nB,x\n', newline="")
    assert read_rows(tmp_path / "t.csv") == [("t.csv line 3", {"id": "A", "note": "two\nlines"}),
                                             ("t.csv line 4", {"id": "B", "note": "x"})]


def test_csv_column_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,name,id\nA,a,B\n")
    with pytest.raises(TableError, match="column.*id.*more than once"):
        read_rows(tmp_path / "t.csv")


@pytest.mark.parametrize("name, text", [("t.csv", "id,image\nA,a.png\n"),
                                        ("t.jsonl", '{"id": "A", "image": "a.png"}\n')])
def test_required_columns_are_named_when_missing(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(TableError, match=r"missing column\(s\) name \(needs id, name, image\)"):
        read_rows(tmp_path / name, ("id", "name", "image"))
    assert len(read_rows(tmp_path / name, ("id", "image"))) == 1


@pytest.mark.parametrize("name, content", [("t.csv", b""), ("t.jsonl", b""), ("t.csv", b"\xef\xbb\xbf\n  \n"),
                                           ("t.jsonl", b"\n\n")])
def test_empty_files_have_no_rows_even_with_required_columns(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    assert read_rows(tmp_path / name, ("id",)) == []


def test_csv_with_only_a_header_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,name,image\n")
    assert read_rows(tmp_path / "t.csv", ("id", "name", "image")) == []


def test_jsonl_with_bom_blank_lines_crlf_and_nan(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "A", "x": NaN}\r\n\r\n{"id": "B"}\n')
    assert read_rows(tmp_path / "t.jsonl") == [("t.jsonl line 1", {"id": "A", "x": None}),
                                               ("t.jsonl line 3", {"id": "B"})]


def test_jsonl_lines_end_only_at_newline(tmp_path: Path) -> None:
    # U+2028, U+2029 and U+0085 are legal raw text inside a JSON string; splitlines() would cut the line there.
    (tmp_path / "t.jsonl").write_text('{"name": "a\u2028b\u2029c\x85d"}\n{"name": "e"}\n', encoding="utf-8")
    assert [row["name"] for _, row in read_rows(tmp_path / "t.jsonl")] == ["a\u2028b\u2029c\x85d", "e"]


@pytest.mark.parametrize("line, reason", [("{oops", "invalid JSON"), ("[1, 2]", "expected a JSON object"),
                                          ('{"id": ' + "7" * 5000 + "}", "integer of 5000 digits"),
                                          ("[" * 100_000, "nested more than")])
def test_jsonl_bad_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    (tmp_path / "t.jsonl").write_text('{"id": "A"}\n\n' + line + "\n")
    with pytest.raises(TableError, match=rf"t\.jsonl line 3: {reason}"):
        read_rows(tmp_path / "t.jsonl")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_bytes(b"id,name\nA,ok\nB,caf\xe9\n")
    with pytest.raises(TableError, match=r"t\.csv line 3: not UTF-8"):
        read_rows(tmp_path / "t.csv")


def test_wrong_suffix_and_unreadable_files_are_table_errors(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_bytes(b"PK")
    with pytest.raises(TableError, match="must be a .csv or .jsonl file"):
        read_rows(tmp_path / "t.xlsx")
    with pytest.raises(TableError, match="cannot be read"):
        read_rows(tmp_path / "missing.csv")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(TableError, match="cannot be read"):
        read_rows(tmp_path / "folder.csv")
    assert issubclass(TableError, ValueError)


# ------------------------------------------------------------ text for display
def test_clean_text_removes_control_characters_and_falls_back() -> None:
    assert clean_text("Evil\x1b[2J\x1b]0;owned\x07 Pin\n") == "Evil [2J ]0;owned  Pin"
    assert clean_text("right\u202eto left") == "right to left"
    assert clean_text(None, fallback="pin-1") == "pin-1" and clean_text(" \t", fallback="x") == "x"
    assert clean_text("family \U0001F468\u200d\U0001F469\u200d\U0001F467 caf\u00e9\u00a0") == \
        "family \U0001F468\u200d\U0001F469\u200d\U0001F467 caf\u00e9"  # joiners kept
    assert clean_text(12) == "12"


def test_control_characters_and_utf8_checks() -> None:
    assert has_control_characters("a\tb") and has_control_characters("a\u2028") and has_control_characters("\x85")
    assert not has_control_characters("Tōkyō pin #3 (gold) \U0001F98A")
    assert is_utf8("café") and not is_utf8("pin-\udcff") and not is_utf8(Path("x") / "pin-\udcff")


def test_printable_escapes_undecodable_bytes_and_control_characters() -> None:
    assert printable("/cat/pin-\udcff") == "/cat/pin-\\xff"
    assert printable(Path("/cat/a\x1b[31mb")) == "/cat/a\\x1b[31mb"
    assert printable("lone \ud800") == "lone \\ud800"
    assert printable("/cat/café fox") == "/cat/café fox"
