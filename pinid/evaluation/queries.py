"""Ground truth: what each query photo shows (``GroundTruthQuery``), and what came back for it (``QueryOutcome``).

Ground truth is a CSV or JSONL file with ``query_id, image, pin_id, design,
split``; ``image`` is relative to the file; ``pin_id`` is empty for pins that
are not in the catalogue (split ``unknown``).

``QueryOutcome`` lives here rather than beside ``evaluate`` (``run.py``): the
metrics and the contact sheets read it and ``run.py`` makes it, so keeping it
below all three leaves the imports one-way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..results import Match
from ..tables import TableError, printable, read_rows

UNKNOWN_SPLIT = "unknown"


@dataclass(frozen=True)
class GroundTruthQuery:
    """One query photo and the pin it shows (``pin_id`` None: not in the catalogue)."""

    query_id: str
    image: Path
    pin_id: str | None
    design: str | None
    split: str

    @property
    def is_known(self) -> bool:
        return self.pin_id is not None


@dataclass(frozen=True)
class QueryOutcome:
    """One query with the matches pinid returned for it (or the reason its photo could not be read)."""

    query: GroundTruthQuery
    matches: list[Match]
    error: str | None = None
    confidence: float | None = None  # calibrated, when the answer was verified

    @property
    def rank(self) -> int | None:
        """1-based rank of the expected pin among the returned matches, or None."""
        for match in self.matches:
            if match.pin_id == self.query.pin_id:
                return match.rank
        return None

    @property
    def top_score(self) -> float:
        """What open-set decisions use: the calibrated confidence, else the first match's score."""
        if self.confidence is not None:
            return self.confidence
        return self.matches[0].score if self.matches else float("-inf")


def read_queries(path: str | os.PathLike) -> list[GroundTruthQuery]:
    """Read ground truth (CSV or JSONL, through ``pinid.tables``); paths are resolved relative to the file."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise InputError(f"ground truth {printable(source)} does not exist")
    try:
        rows = read_rows(source, ("image",))
    except TableError as exc:
        raise InputError(f"ground truth {exc}") from None

    def cell(row: dict, column: str) -> str:
        return "" if row.get(column) is None else str(row[column]).strip()

    queries = []
    for number, (where, row) in enumerate(rows, start=1):
        if not cell(row, "image"):
            raise InputError(f"ground truth {printable(where)}: needs an 'image'")
        pin_id = cell(row, "pin_id") or None
        split = cell(row, "split") or ("single" if pin_id else UNKNOWN_SPLIT)
        queries.append(GroundTruthQuery(cell(row, "query_id") or str(number), source.parent / cell(row, "image"),
                                        pin_id, cell(row, "design") or None, split))
    if not queries:
        raise InputError(f"ground truth {printable(source)} has no queries")
    return queries


def sample_queries(queries: Sequence[GroundTruthQuery], size: int, seed: int = 0) -> list[GroundTruthQuery]:
    """A reproducible uniform random sample (verified runs are slow on 12k photos); each split keeps its share
    on average, not exactly."""
    if size >= len(queries):
        return list(queries)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(queries))[:size])
    return [queries[i] for i in chosen]
