"""Writing result rows (dedup groups, --against verdicts) as CSV or JSON, safely and atomically.

Listing ids, paths and error texts come from users, and a CSV is opened in
spreadsheets: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return would run as a formula there. :func:`format_rows` is the one
place that turns rows into text, for files and for stdout alike; it prefixes
such text cells with a single quote (OWASP's advice) and leaves numbers that
pinid writes (a negative cosine) as numbers. JSON is not a formula language:
it keeps the text as it is, with no NaN (``pinid.tables.dumps``).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .._atomic import write_file_atomically
from ..tables import dumps

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ResultRow:
    """Shared by dedup's output rows: a plain dict with the score rounded for CSV/JSON."""

    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "score": None if self.score is None else round(self.score, 6)}


@dataclass
class RowsReport:
    """What a dedup job returns: one row per listing, how much was encoded or cached, and counts."""

    rows: list[Any]
    encoded: int
    cached: int
    seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)


ROW_FIELDS = ["listing_id", "image", "group_id", "group_size", "representative", "score", "phash_distance",
              "reason", "error"]


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: ``None`` empty, text that a spreadsheet would run as a formula quoted."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def format_rows(rows: Sequence[Any], fields: Sequence[str], *, as_json: bool = False) -> str:
    """Rows as CSV text (header first, formula-like text cells neutralised) or a JSON list."""
    records = [row.to_dict() for row in rows]
    if as_json:
        return dumps(records, indent=2) + "\n"
    buffer = io.StringIO(newline="")
    # RFC 4180 line ends: with "\n" alone the csv module leaves a carriage return inside a cell unquoted
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in record.items()} for record in records)
    return buffer.getvalue()


def write_rows(rows: Sequence[Any], path: str | os.PathLike, fields: Sequence[str], *, as_json: bool = False) -> None:
    """Write result rows as CSV (or a JSON list), atomically: a reader never sees half a file."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(target, format_rows(rows, fields, as_json=as_json).encode("utf-8"))
