"""The one reader for the CSV and JSONL files users hand pinid (catalogues, listings, ground truth).

Every failure is a ``ValueError`` subclass the caller turns into its own
error class, with the file and line in the message. The same rules hold for
every table: UTF-8 with or without a byte-order mark, one JSON object per
JSONL line, ``NaN``/``Infinity`` read as null (JSON has neither), integers of
any length refused rather than crashing, nesting bounded.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable

#: Deeper JSON than this is refused (Python's parser would hit its recursion limit).
MAX_JSON_DEPTH = 64
TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson")


class TableError(ValueError):
    """A table cannot be read; the message names the file and, where known, the line."""


def parse_json(text: str) -> Any:
    """``json.loads`` for untrusted text: BOM allowed, NaN/Infinity -> None, bounded depth and integer size.

    Raises ``ValueError`` with a short reason for anything else.
    """
    text = text.lstrip("\ufeff")
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text, parse_constant=lambda _: None, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > 30:
        raise ValueError(f"integer of {len(digits)} digits is too long")
    return int(digits)


def _nesting_depth(text: str) -> int:
    """Bracket depth outside strings, counted without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def json_safe(value: Any) -> Any:
    """A copy with NaN and infinities replaced by None, so ``json.dumps(..., allow_nan=False)`` succeeds."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON that every parser accepts (no NaN), keeping non-ASCII text readable."""
    return json.dumps(json_safe(value), ensure_ascii=False, allow_nan=False, **kwargs)


def read_rows(path: Path, required: Iterable[str] = ()) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each row of a CSV (header line) or JSONL file; ``where`` is "NAME line N".

    ``required`` columns must be present (in the header, or in some JSONL row).
    """
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableError(f"{path} must be a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise TableError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    rows = _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text)
    columns = _csv_header(path, text) if suffix == ".csv" else set().union(*(row.keys() for _, row in rows))
    missing = [c for c in required if c not in columns]
    if missing and (rows or suffix == ".csv"):
        raise TableError(f"{path}: missing column(s) {', '.join(missing)} (needs {', '.join(required)})")
    return rows


def _csv_header(path: Path, text: str) -> set[str]:
    try:
        header = next(csv.reader(text.splitlines()[:1]), [])
    except csv.Error as exc:
        raise TableError(f"{path}: not a readable CSV file ({exc})") from None
    return {column.strip() for column in header}


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    import io

    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is not None:
            reader.fieldnames = [name.strip() for name in reader.fieldnames]
        rows = []
        for row in reader:
            extra = row.pop(None, None)  # type: ignore[call-overload]
            if extra:
                raise TableError(f"{path.name} line {reader.line_num}: more cells than header columns")
            rows.append((f"{path.name} line {reader.line_num}", dict(row)))
        return rows
    except csv.Error as exc:
        raise TableError(f"{path}: not a readable CSV file ({exc})") from None


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = parse_json(line)
        except ValueError as exc:
            raise TableError(f"{path} line {number}: {exc}") from None
        if not isinstance(row, dict):
            raise TableError(f"{path} line {number}: expected a JSON object")
        rows.append((f"{path.name} line {number}", row))
    return rows


def clean_text(value: Any, fallback: str = "") -> str:
    """A display string from a table cell: None -> fallback, control characters removed, stripped."""
    if value is None:
        return fallback
    text = "".join(ch if ch.isprintable() or ch == " " else " " for ch in str(value)).strip()
    return text or fallback

