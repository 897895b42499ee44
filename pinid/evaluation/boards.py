"""Scoring multi-pin photos (boards, lanyards): which pins were found, and where.

A found pin is correct when the board lists that pin and the found outline
overlaps the listed one (intersection over union >= ``MIN_IOU``); each listed
pin can be claimed once. Precision and recall are pooled over all boards, at
the index's threshold and along the whole confidence curve, so the report can
say what recall is reached at a required precision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, PinidError
from ..index import PinIndex
from ..results import Progress
from ..tables import TableError, printable, read_rows

MIN_IOU = 0.3
REQUIRED_PRECISION = 0.95


@dataclass(frozen=True)
class BoardTruth:
    image: Path
    pins: list[tuple[str, np.ndarray]]  # (pin_id, polygon (4, 2))


def read_boards(path: str | os.PathLike, *, sample: int | None = None, seed: int = 0) -> list[BoardTruth]:
    """Read ``boards.jsonl`` lines: {"image": ..., "pins": [{"pin_id": ..., "polygon": [[x, y], ...]}]}.

    Read through ``pinid.tables`` (BOM, NaN and size limits as for every table);
    a polygon needs at least 3 finite points. ``sample`` keeps a seeded random
    subset of that many boards.
    """
    source = Path(path).expanduser()
    if source.suffix.lower() not in (".jsonl", ".ndjson"):
        raise InputError(f"board ground truth {printable(source)} must be a .jsonl file")
    try:
        rows = read_rows(source)
    except TableError as exc:
        raise InputError(f"board ground truth {exc}") from None
    boards = []
    for where, record in rows:
        try:
            pins = []
            for pin in record["pins"]:
                polygon = np.asarray(pin["polygon"], np.float64).reshape(-1, 2)
                if len(polygon) < 3 or not np.isfinite(polygon).all():
                    raise ValueError("a polygon needs at least 3 finite [x, y] points")
                pins.append((str(pin["pin_id"]), polygon.astype(np.float32)))
            boards.append(BoardTruth(source.parent / str(record["image"]), pins))
        except KeyError as exc:
            raise InputError(f"board ground truth {printable(where)}: not a board record (no {exc})") from None
        except (ValueError, TypeError) as exc:
            raise InputError(f"board ground truth {printable(where)}: not a board record ({exc})") from None
    if sample is not None and sample < len(boards):
        boards = [boards[i] for i in sorted(np.random.default_rng(seed).permutation(len(boards))[:sample])]
    return boards


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    a32, b32 = cv2.convexHull(a.astype(np.float32)), cv2.convexHull(b.astype(np.float32))
    inter, _ = cv2.intersectConvexConvex(a32, b32)
    union = cv2.contourArea(a32) + cv2.contourArea(b32) - inter
    return float(inter / union) if union > 0 else 0.0


def score_board(truth: BoardTruth, found: Sequence[tuple[str, float, np.ndarray]]) -> list[tuple[float, bool]]:
    """(confidence, correct) for each found pin, most confident claims first."""
    claimed: set[int] = set()
    scored = []
    for pin_id, confidence, polygon in sorted(found, key=lambda f: -f[1]):
        hit = next((i for i, (true_id, true_polygon) in enumerate(truth.pins)
                    if i not in claimed and true_id == pin_id and polygon_iou(polygon, true_polygon) >= MIN_IOU), None)
        if hit is not None:
            claimed.add(hit)
        scored.append((confidence, hit is not None))
    return scored


def board_metrics(scored: Sequence[tuple[float, bool]], total_pins: int, threshold: float) -> dict[str, Any]:
    """Pooled precision/recall at ``threshold`` and the best recall with precision >= REQUIRED_PRECISION."""
    confidences = np.array([c for c, _ in scored], dtype=np.float64)
    correct = np.array([ok for _, ok in scored], dtype=bool)
    order = np.argsort(-confidences, kind="stable")
    hits = np.cumsum(correct[order])
    precision_curve = hits / np.arange(1, len(order) + 1)
    recall_curve = hits / max(total_pins, 1)
    good = precision_curve >= REQUIRED_PRECISION
    best = int(np.argmax(np.where(good, recall_curve, -1))) if good.any() else None
    accepted = confidences >= threshold
    return {
        "pins": total_pins, "found": int(accepted.sum()),
        "at_threshold": {"threshold": threshold,
                         "precision": float(correct[accepted].mean()) if accepted.any() else float("nan"),
                         "recall": float(correct[accepted].sum() / max(total_pins, 1))},
        f"recall_at_precision_{REQUIRED_PRECISION}": float(recall_curve[best]) if best is not None else 0.0,
        "confidence_for_that": float(confidences[order][best]) if best is not None else None,
    }


def evaluate_boards(index: PinIndex, boards: Sequence[BoardTruth], *,
                    on_progress: Progress | None = None) -> dict[str, Any]:
    """Find pins on every board photo (all candidates, any confidence) and score them."""
    scored: list[tuple[float, bool]] = []
    unreadable = 0
    for done, board in enumerate(boards, 1):
        try:
            found = index.identify_multi(board.image, min_confidence=0.0)
        except PinidError:
            unreadable += 1
            found = []
        scored += score_board(board, [(f.match.pin_id, f.confidence, f.polygon) for f in found])
        if on_progress is not None:
            on_progress("boards", done, len(boards))
    metrics = board_metrics(scored, sum(len(b.pins) for b in boards), index.calibration.unknown_below)
    metrics["boards"] = len(boards)
    metrics["unreadable"] = unreadable
    return metrics
