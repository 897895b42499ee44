"""The one reader for the CSV and JSONL files users hand pinid (catalogues, listings, ground truth).

Every failure is a ``ValueError`` subclass the caller turns into its own
error class, with the file and line in the message. The same rules hold for
every table: UTF-8 with or without a byte-order mark, one JSON object per
JSONL line (lines end at ``\\n`` only: U+2028 and friends are text inside a
JSON string), ``NaN``/``Infinity`` (and floats too large for a double) read as
null (JSON has neither), integers over ``MAX_INT_DIGITS`` digits and nesting
deeper than ``MAX_JSON_DEPTH`` refused rather than crashing, lone surrogates
(``"\\ud800"``, which no UTF-8 file or SQLite text can hold) read as U+FFFD.

Text that came from the user's disk is shown through ``printable`` or
``clean_text`` so that file names and cells can never drive the terminal.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable

#: Deeper JSON than this is refused (Python's parser would hit its recursion limit).
MAX_JSON_DEPTH = 64
#: Longer integers are refused (Python refuses over 4,300 digits with a traceback; nothing needs 31).
MAX_INT_DIGITS = 30
TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson")

_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
#: Format characters kept: the joiners that emoji sequences and several scripts need.
_KEPT_FORMAT = {"\u200c", "\u200d"}


class TableError(ValueError):
    """A table cannot be read; the message names the file and, where known, the line."""


def parse_json(text: str) -> Any:
    """``json.loads`` for untrusted text: BOM allowed, NaN/Infinity -> None, bounded depth and integer size.

    Raises ``ValueError`` with a short reason for anything else.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        value = json.loads(text, parse_constant=lambda _: None, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return _without_surrogates(value) if _ESCAPED_SURROGATE.search(text) else value


def read_json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A small JSON file holding one object (a cache's metadata): ``(object, None)``, or ``(None, why not)``."""
    try:
        data = parse_json(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror or exc}"
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not valid JSON: {exc}"
    if not isinstance(data, dict):
        return None, f"a JSON {type(data).__name__}, not an object"
    return data, None


def _parse_int(digits: str) -> int:
    length = len(digits.lstrip("-"))
    if length > MAX_INT_DIGITS:
        raise ValueError(f"integer of {length} digits is too long (at most {MAX_INT_DIGITS})")
    return int(digits)


def _parse_float(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _without_surrogates(value: Any) -> Any:
    """Lone surrogates (valid JSON escapes, invalid Unicode) replaced by U+FFFD, keys included."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_SURROGATE.sub("\ufffd", k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def _nesting_depth(text: str) -> int:
    """Bracket depth outside strings, counted without recursion (stops once past the limit)."""
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

    ``required`` columns must be present (in the header, or in some JSONL
    row). An empty file has no rows (and no missing columns): the caller says
    what an empty table means. Raises ``TableError``.
    """
    path = Path(path)
    required = tuple(required)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableError(f"{printable(path)} must be a .csv or .jsonl file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TableError(f"{printable(path)}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TableError(f"{printable(path)} line {line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        return []
    if suffix == ".csv":
        columns, rows = _csv_rows(path, text)
    else:
        rows = _jsonl_rows(path, text)
        columns = set().union(*(row.keys() for _, row in rows))
    missing = [c for c in required if c not in columns]
    if missing:
        raise TableError(f"{printable(path)}: missing column(s) {', '.join(missing)} "
                         f"(needs {', '.join(required)})")
    return rows


def _csv_rows(path: Path, text: str) -> tuple[set[str], list[tuple[str, dict[str, Any]]]]:
    """The header's column names and the rows; header cells are stripped, empty extra cells ignored."""
    shown = printable(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [cell.strip() for cell in next(reader, [])]
        twice = sorted({name for name in header if name and header.count(name) > 1})
        if twice:
            raise TableError(f"{shown} line 1: column(s) {', '.join(twice)} appear more than once")
        rows = []
        for cells in reader:
            if not cells:
                continue
            where = f"{path.name} line {reader.line_num}"
            row: dict[str, Any] = {}
            for position, cell in enumerate(cells):
                name = header[position] if position < len(header) else ""
                if name:
                    row[name] = cell
                elif cell.strip():
                    raise TableError(f"{shown} line {reader.line_num}: a cell under no named column "
                                     f"(column {position + 1}; the header has {len(header)})")
            for name in header[len(cells):]:
                if name:
                    row.setdefault(name, None)
            rows.append((where, row))
    except csv.Error as exc:
        raise TableError(f"{shown} line {reader.line_num}: not a readable CSV file ({exc})") from None
    return {name for name in header if name}, rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            row = parse_json(line)
        except ValueError as exc:
            raise TableError(f"{printable(path)} line {number}: {exc}") from None
        if not isinstance(row, dict):
            raise TableError(f"{printable(path)} line {number}: expected a JSON object")
        rows.append((f"{path.name} line {number}", row))
    return rows


def _unsafe(char: str) -> bool:
    """Characters that move the cursor, reorder or hide text, or cannot be encoded."""
    category = unicodedata.category(char)
    return category in ("Cc", "Zl", "Zp", "Cs") or (category == "Cf" and char not in _KEPT_FORMAT)


def has_control_characters(text: str) -> bool:
    """True if ``text`` holds characters that ``clean_text`` would remove (unusable in an id)."""
    return any(_unsafe(char) for char in text)


def clean_text(value: Any, fallback: str = "") -> str:
    """A display string from a table cell: None -> fallback, control characters removed, stripped."""
    if value is None:
        return fallback
    text = "".join(" " if _unsafe(ch) else ch for ch in str(value)).strip()
    return text or fallback


def is_utf8(text: str | os.PathLike) -> bool:
    """False for names holding bytes that are not UTF-8 (Python keeps them as surrogates; SQLite and JSON
    cannot store them)."""
    try:
        os.fspath(text).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(value: str | os.PathLike) -> str:
    """A path or name shown as it is, except bytes that are not UTF-8 (``\\xff``) and control characters
    (``\\x1b``), which are escaped."""
    text = os.fspath(value)
    if not is_utf8(text):
        try:  # undecodable bytes of a file name, as Python keeps them
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # any other surrogate
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if not has_control_characters(text):
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii") if _unsafe(ch) else ch for ch in text)
