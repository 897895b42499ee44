"""Accuracy metrics on hand-made rankings (pinid/evaluation/metrics.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pinid.evaluation.metrics import (auroc, compute_metrics, mean_reciprocal_rank, open_set_at_threshold,
                                      recall_at_k)
from pinid.evaluation.queries import GroundTruthQuery, QueryOutcome
from pinid.results import Match


def _match(rank: int, pin_id: str, score: float, design: str | None = None) -> Match:
    return Match(rank, pin_id, pin_id, {"design": design} if design else {}, f"{pin_id}.png", similarity=score)


def outcome(expected: str | None, returned: list[tuple[str, float]], split: str = "single",
            design: str | None = None, designs: dict[str, str] | None = None,
            confidence: float | None = None) -> QueryOutcome:
    designs = designs or {}
    query = GroundTruthQuery("q", Path("q.jpg"), expected, design, split if expected else "unknown")
    matches = [_match(i + 1, pin, score, designs.get(pin)) for i, (pin, score) in enumerate(returned)]
    return QueryOutcome(query, matches, confidence=confidence)


def test_recall_and_mrr_on_hand_made_ranks() -> None:
    ranks = [1, 2, None, 5]
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 5) == 0.75
    assert recall_at_k(ranks, 10) == 0.75
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 0 + 0.2) / 4)
    assert math.isnan(recall_at_k([], 1)) and math.isnan(mean_reciprocal_rank([]))


def test_auroc_known_answers() -> None:
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    assert auroc([0.9, 0.4], [0.5, 0.1]) == 0.75  # 3 of 4 pairs ordered right
    assert auroc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(3.5 / 4)  # one tie counts half
    assert math.isnan(auroc([0.9], []))


def test_open_set_precision_and_recall_at_threshold() -> None:
    outcomes = [
        outcome("a", [("a", 0.9)]),       # accepted, right
        outcome("b", [("x", 0.8)]),       # accepted, wrong
        outcome("c", [("c", 0.3)]),       # rejected although right
        outcome(None, [("a", 0.85)]),     # unknown accepted: wrong
        outcome(None, [("b", 0.2)]),      # unknown rejected: right
    ]
    result = open_set_at_threshold(outcomes, 0.5)
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["unknown_rejected"] == 0.5


def test_open_set_uses_the_calibrated_confidence_over_the_cosine() -> None:
    # a high cosine but a low calibrated confidence: the confidence decides
    doubtful = outcome("a", [("a", 0.95)], confidence=0.1)
    assert doubtful.top_score == 0.1
    assert open_set_at_threshold([doubtful], 0.5)["recall"] == 0.0
    assert outcome("a", []).top_score == float("-inf")  # an unreadable photo is never accepted


def test_colourway_variant_and_design_accuracy() -> None:
    designs = {"fox-gold": "fox", "fox-silver": "fox", "owl": "owl"}
    outcomes = [
        outcome("fox-gold", [("fox-gold", 0.9), ("fox-silver", 0.8)], "colourway", "fox", designs),
        outcome("fox-gold", [("fox-silver", 0.9), ("fox-gold", 0.85)], "colourway", "fox", designs),
        outcome("fox-silver", [("owl", 0.9)], "colourway", "fox", designs),
        outcome("owl", [("owl", 0.95)], "single", "owl", designs),
        outcome(None, [("owl", 0.4)]),
    ]
    metrics = compute_metrics(outcomes, threshold=None)
    assert metrics["colourway"]["queries"] == 3
    assert metrics["colourway"]["variant_accuracy"] == pytest.approx(1 / 3)
    assert metrics["colourway"]["design_accuracy"] == pytest.approx(2 / 3)
    assert metrics["retrieval"]["recall@1"] == pytest.approx(2 / 4)
    assert metrics["retrieval"]["by_split"]["single"]["recall@1"] == 1.0
    assert metrics["open_set"]["auroc_known_vs_unknown"] == 1.0
    assert metrics["open_set"]["at_threshold"] is None
    assert metrics["queries"] == {"total": 5, "known": 4, "unknown": 1, "unreadable": 0}
    assert compute_metrics(outcomes, threshold=0.5)["open_set"]["at_threshold"]["threshold"] == 0.5
