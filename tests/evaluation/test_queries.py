"""Ground truth reading and sampling (pinid/evaluation/queries.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinid.errors import InputError
from pinid.evaluation.queries import GroundTruthQuery, read_queries, sample_queries


def test_read_queries_csv_resolves_paths_and_unknowns(tmp_path: Path) -> None:
    (tmp_path / "gt.csv").write_text("query_id,image,pin_id,design,split\n"
                                     "q1,queries/a.jpg,pin-1,d1,single\n"
                                     "q2,queries/b.jpg,,d9,unknown\n")
    queries = read_queries(tmp_path / "gt.csv")
    assert queries[0].image == tmp_path / "queries" / "a.jpg" and queries[0].is_known
    assert queries[1].pin_id is None and not queries[1].is_known and queries[1].split == "unknown"
    with pytest.raises(InputError):
        read_queries(tmp_path / "missing.csv")


def test_read_queries_jsonl_fills_in_id_and_split(tmp_path: Path) -> None:
    (tmp_path / "gt.jsonl").write_text('{"image": "a.jpg", "pin_id": "pin-1"}\n\n{"image": "b.jpg"}\n')
    first, second = read_queries(tmp_path / "gt.jsonl")
    assert (first.query_id, first.split) == ("1", "single")
    assert second.pin_id is None and second.split == "unknown"


@pytest.mark.parametrize("name, text", [("gt.txt", "image\na.jpg\n"), ("gt.csv", "query_id,image\n"),
                                        ("gt.csv", "query_id,pin_id\nq1,pin-1\n")])
def test_unusable_ground_truth_is_an_input_error(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError):
        read_queries(tmp_path / name)


def test_sample_is_seeded_ordered_and_never_larger_than_the_input() -> None:
    queries = [GroundTruthQuery(f"q{i}", Path(f"{i}.jpg"), None, None, "unknown") for i in range(50)]
    sample = sample_queries(queries, 10, seed=3)
    assert len(sample) == 10 and sample == sample_queries(queries, 10, seed=3)
    assert sample != sample_queries(queries, 10, seed=4)
    assert [queries.index(q) for q in sample] == sorted(queries.index(q) for q in sample)
    assert sample_queries(queries, 500) == queries
