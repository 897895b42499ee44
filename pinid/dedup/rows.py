"""Writing result rows (dedup groups, --against verdicts) as CSV or JSON, safely and atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .._atomic import write_file_atomically


class ResultRow:
    """Shared by dedup's output rows: a plain dict with the score rounded for CSV/JSON."""

    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "score": None if self.score is None else round(self.score, 6)}



ROW_FIELDS = ["listing_id", "image", "group_id", "group_size", "representative", "score", "phash_distance",
              "reason", "error"]


def write_rows(rows: Sequence[Any], path: str | os.PathLike, fields: Sequence[str], *, as_json: bool = False) -> None:
    """Write result rows as CSV (or a JSON list), atomically: a reader never sees half a file."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    records = [row.to_dict() for row in rows]
    buffer = io.StringIO(newline="")
    if as_json:
        json.dump(records, buffer, indent=2, ensure_ascii=False)
        buffer.write("\n")
    else:
        writer = csv.DictWriter(buffer, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in record.items()} for record in records)
    write_file_atomically(target, buffer.getvalue().encode("utf-8"))

