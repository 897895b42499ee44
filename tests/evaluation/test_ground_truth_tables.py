"""Ground truth (queries.csv/jsonl, boards.jsonl) is read through pinid.tables: BOM, limits, clear InputErrors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pinid.errors import InputError
from pinid.evaluation.boards import read_boards
from pinid.evaluation.queries import read_queries

BOM = b"\xef\xbb\xbf"
BOARD = {"image": "b/1.jpg", "pins": [{"pin_id": "p1", "polygon": [[0, 0], [10, 0], [10, 10], [0, 10]]}]}


def test_queries_accept_a_bom_in_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "gt.csv").write_bytes(BOM + b"query_id, image ,pin_id\nq1,a.jpg,p1\n")
    (tmp_path / "gt.jsonl").write_bytes(BOM + b'{"query_id": "q1", "image": "a.jpg", "pin_id": "p1"}\n')
    for name in ("gt.csv", "gt.jsonl"):
        [query] = read_queries(tmp_path / name)
        assert (query.query_id, query.image, query.pin_id, query.split) == ("q1", tmp_path / "a.jpg", "p1", "single")


def test_queries_jsonl_cells_that_are_not_text(tmp_path: Path) -> None:
    (tmp_path / "gt.jsonl").write_text('{"image": "a.jpg", "pin_id": 12, "design": null, "query_id": 5}\n'
                                       '{"image": "b.jpg", "pin_id": null}\n')
    first, second = read_queries(tmp_path / "gt.jsonl")
    assert (first.query_id, first.pin_id, first.design) == ("5", "12", None)
    assert (second.query_id, second.pin_id, second.split) == ("2", None, "unknown")


@pytest.mark.parametrize("name, content, message", [
    ("gt.csv", b"query_id,image\nq1,caf\xe9.jpg\n", r"gt\.csv line 2: not UTF-8"),
    ("gt.csv", b"query_id,pin_id\nq1,p1\n", r"missing column\(s\) image"),
    ("gt.csv", b"query_id,image\nq1,\n", r"gt\.csv line 2: needs an 'image'"),
    ("gt.jsonl", b'{"image": "a.jpg", "n": ' + b"9" * 5000 + b"}\n", r"gt\.jsonl line 1: integer of 5000"),
    ("gt.jsonl", b"[" * 100_000 + b"\n", r"gt\.jsonl line 1: nested more than"),
    ("gt.jsonl", b"", "has no queries"),
    ("gt.txt", b"x", r"must be a \.csv or \.jsonl file"),
])
def test_unusable_queries_are_one_line_input_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        read_queries(tmp_path / name)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_boards_accept_a_bom_and_nan_free_polygons(tmp_path: Path) -> None:
    (tmp_path / "boards.jsonl").write_bytes(BOM + json.dumps(BOARD).encode() + b"\n\n")
    [board] = read_boards(tmp_path / "boards.jsonl")
    assert board.image == tmp_path / "b" / "1.jpg" and board.pins[0][0] == "p1"
    assert board.pins[0][1].dtype == np.float32 and board.pins[0][1].shape == (4, 2)


@pytest.mark.parametrize("line, message", [
    ('{"image": "x.jpg"}', r"boards\.jsonl line 2: not a board record \(no 'pins'\)"),
    ('{"image": "x.jpg", "pins": [{"pin_id": "p", "polygon": [[0, 0], [1, 1]]}]}', "at least 3 finite"),
    ('{"image": "x.jpg", "pins": [{"pin_id": "p", "polygon": [[0, 0], [1, NaN], [2, 2]]}]}', "not a board record"),
    ('{"image": "x.jpg", "pins": "p1"}', "not a board record"),
    ('{"image": "x.jpg", "pins": [], "n": ' + "9" * 5000 + "}", r"boards\.jsonl line 2: integer of 5000"),
    ("[" * 100_000, r"boards\.jsonl line 2: nested more than"),
    ("[1]", r"boards\.jsonl line 2: expected a JSON object"),
])
def test_unusable_board_lines_are_one_line_input_errors(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "boards.jsonl").write_text(json.dumps(BOARD) + "\n" + line + "\n")
    with pytest.raises(InputError, match=message) as caught:
        read_boards(tmp_path / "boards.jsonl")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_boards_need_a_readable_jsonl_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read"):
        read_boards(tmp_path / "missing.jsonl")
    (tmp_path / "boards.csv").write_text("image\nx.jpg\n")
    with pytest.raises(InputError, match=r"must be a \.jsonl file"):
        read_boards(tmp_path / "boards.csv")
    (tmp_path / "boards.jsonl").write_bytes(b'{"image": "caf\xe9.jpg", "pins": []}\n')
    with pytest.raises(InputError, match="not UTF-8"):
        read_boards(tmp_path / "boards.jsonl")
