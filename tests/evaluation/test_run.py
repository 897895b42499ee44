from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from pinid.cli import main
from pinid.errors import InputError
from pinid.evaluation.run import (GroundTruthQuery, QueryOutcome, auroc, compute_metrics, mean_reciprocal_rank,
                            open_set_at_threshold, read_queries, recall_at_k)
from pinid.results import Match

from tests.support import draw_pin_image


def _match(rank: int, pin_id: str, score: float, design: str | None = None) -> Match:
    return Match(rank, pin_id, pin_id, {"design": design} if design else {}, f"{pin_id}.png", similarity=score)


def _outcome(expected: str | None, returned: list[tuple[str, float]], split: str = "single",
             design: str | None = None, designs: dict[str, str] | None = None) -> QueryOutcome:
    designs = designs or {}
    query = GroundTruthQuery("q", Path("q.jpg"), expected, design, split if expected else "unknown")
    matches = [_match(i + 1, pin, score, designs.get(pin)) for i, (pin, score) in enumerate(returned)]
    return QueryOutcome(query, matches)


def test_recall_and_mrr_on_hand_made_ranks() -> None:
    ranks = [1, 2, None, 5]
    assert recall_at_k(ranks, 1) == 0.25
    assert recall_at_k(ranks, 5) == 0.75
    assert recall_at_k(ranks, 10) == 0.75
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 0 + 0.2) / 4)
    assert math.isnan(recall_at_k([], 1))


def test_auroc_known_answers() -> None:
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    assert auroc([0.9, 0.4], [0.5, 0.1]) == 0.75  # 3 of 4 pairs ordered right
    assert auroc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(3.5 / 4)  # one tie counts half


def test_open_set_precision_and_recall_at_threshold() -> None:
    outcomes = [
        _outcome("a", [("a", 0.9)]),       # accepted, right
        _outcome("b", [("x", 0.8)]),       # accepted, wrong
        _outcome("c", [("c", 0.3)]),       # rejected although right
        _outcome(None, [("a", 0.85)]),     # unknown accepted: wrong
        _outcome(None, [("b", 0.2)]),      # unknown rejected: right
    ]
    result = open_set_at_threshold(outcomes, 0.5)
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["unknown_rejected"] == 0.5


def test_colourway_variant_and_design_accuracy() -> None:
    designs = {"fox-gold": "fox", "fox-silver": "fox", "owl": "owl"}
    outcomes = [
        _outcome("fox-gold", [("fox-gold", 0.9), ("fox-silver", 0.8)], "colourway", "fox", designs),
        _outcome("fox-gold", [("fox-silver", 0.9), ("fox-gold", 0.85)], "colourway", "fox", designs),
        _outcome("fox-silver", [("owl", 0.9)], "colourway", "fox", designs),
        _outcome("owl", [("owl", 0.95)], "single", "owl", designs),
        _outcome(None, [("owl", 0.4)]),
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


def test_read_queries_csv_resolves_paths_and_unknowns(tmp_path: Path) -> None:
    (tmp_path / "gt.csv").write_text("query_id,image,pin_id,design,split\n"
                                     "q1,queries/a.jpg,pin-1,d1,single\n"
                                     "q2,queries/b.jpg,,d9,unknown\n")
    queries = read_queries(tmp_path / "gt.csv")
    assert queries[0].image == tmp_path / "queries" / "a.jpg" and queries[0].is_known
    assert queries[1].pin_id is None and not queries[1].is_known and queries[1].split == "unknown"
    with pytest.raises(InputError):
        read_queries(tmp_path / "missing.csv")


@pytest.fixture
def ground_truth(make_catalogue, tmp_path: Path) -> Path:
    make_catalogue(pins=4, images_per_pin=1)
    queries = tmp_path / "queries"
    queries.mkdir()
    rows = ["query_id,image,pin_id,design,split"]
    for pin in range(4):  # a slightly cropped re-encoded copy of each catalogue image
        image = draw_pin_image(pin * 100).crop((4, 4, 124, 124)).resize((128, 128))
        image.save(queries / f"q{pin}.jpg", quality=80)
        rows.append(f"q{pin},queries/q{pin}.jpg,pin-{pin:03d},pin-{pin:03d},single")
    draw_pin_image(4242).save(queries / "unknown.jpg")
    rows.append("qu,queries/unknown.jpg,,other,unknown")
    (queries / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append("qb,queries/broken.jpg,pin-000,pin-000,single")
    (tmp_path / "gt.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "gt.csv"


def test_eval_command_end_to_end(ground_truth: Path, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    main(["build-index", str(tmp_path / "catalogue"), "-o", str(tmp_path / "idx"),
          "--model", f"local-dir:{tiny_model_dir}"])
    capsys.readouterr()
    main(["eval", "-i", str(tmp_path / "idx"), "--queries", str(ground_truth), "--threshold", "0.5",
          "--failures", str(tmp_path / "failures"), "--output", str(tmp_path / "result.json"),
          "--latency-samples", "3"])
    table = capsys.readouterr().out
    assert "| recall@1 |" in table and "AUROC" in table and "latency" in table
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["queries"] == {"total": 6, "known": 5, "unknown": 1, "unreadable": 1}
    assert result["retrieval"]["recall@10"] == pytest.approx(4 / 5)  # the unreadable query counts as a miss
    assert result["open_set"]["at_threshold"]["threshold"] == 0.5
    assert result["latency_ms"]["samples"] == 3 and result["latency_ms"]["total"]["p50"] > 0
    sheets = sorted((tmp_path / "failures").glob("failures-*.png"))
    assert sheets, "the unreadable query is a failure, so at least one sheet is written"
    with Image.open(sheets[0]) as sheet:
        assert sheet.width == 3 * 256 and sheet.height % (256 + 34) == 0
