"""Scoring multi-pin photos (pinid/evaluation/boards.py) and their table (pinid/evaluation/report.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pinid.evaluation.boards import BoardTruth, board_metrics, polygon_iou, score_board
from pinid.evaluation.report import boards_markdown


def test_board_scoring_needs_right_pin_in_right_place() -> None:
    square = np.float32([[0, 0], [100, 0], [100, 100], [0, 100]])
    truth = BoardTruth(Path("b.jpg"), [("a", square), ("b", square + 200)])
    scored = score_board(truth, [("a", 0.9, square + 5), ("b", 0.8, square), ("b", 0.7, square + 198),
                                 ("b", 0.6, square + 200)])
    assert scored == [(0.9, True), (0.8, False), (0.7, True), (0.6, False)]  # a pin is claimed once
    metrics = board_metrics(scored, total_pins=2, threshold=0.75)
    assert metrics["at_threshold"]["precision"] == 0.5 and metrics["at_threshold"]["recall"] == 0.5
    assert metrics["recall_at_precision_0.95"] == 0.5  # only the first answer keeps precision >= 0.95


def test_polygon_iou_of_known_overlaps() -> None:
    square = np.float32([[0, 0], [100, 0], [100, 100], [0, 100]])
    assert polygon_iou(square, square) == 1.0
    assert abs(polygon_iou(square, square + [50, 0]) - 1 / 3) < 1e-6  # half overlaps: 5000 / 15000
    assert polygon_iou(square, square + 500) == 0.0


def test_boards_table_shows_missing_numbers_as_n_a() -> None:
    metrics = board_metrics([], total_pins=3, threshold=0.6)  # nothing found on any board
    metrics.update(boards=1, unreadable=0)
    table = boards_markdown(metrics)
    assert "| board photos / pins on them | 1 / 3 |" in table
    assert "| at confidence 0.60: precision / recall | n/a / 0.000 |" in table
    assert "nan" not in table
