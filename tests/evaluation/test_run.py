"""`pinid eval` end to end, and which open-set threshold it judges by (pinid/evaluation/run.py)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from pinid.catalogue import read_catalogue
from pinid.encoder import Encoder
from pinid.evaluation.queries import read_queries
from pinid.evaluation.run import THRESHOLD_CALIBRATION, THRESHOLD_GIVEN, evaluate, measure_latency
from pinid.index import PinIndex

from tests.support import draw_pin_image, run

PINS = 4


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Encoder) -> tuple[Path, Path]:
    """(index built with the tiny CLIP model, ground truth: cropped copies, an unknown pin, a broken file)."""
    root = tmp_path_factory.mktemp("eval")
    for pin in range(PINS):
        folder = root / "catalogue" / f"pin-{pin:03d}"
        folder.mkdir(parents=True)
        (folder / "pin.json").write_text(json.dumps({"name": f"Pin number {pin}"}))
        draw_pin_image(pin * 100).save(folder / "img0.png")
    queries = root / "queries"
    queries.mkdir()
    rows = ["query_id,image,pin_id,design,split"]
    for pin in range(PINS):  # a slightly cropped re-encoded copy of each catalogue image
        image = draw_pin_image(pin * 100).crop((4, 4, 124, 124)).resize((128, 128))
        image.save(queries / f"q{pin}.jpg", quality=80)
        rows.append(f"q{pin},queries/q{pin}.jpg,pin-{pin:03d},pin-{pin:03d},single")
    draw_pin_image(4242).save(queries / "unknown.jpg")
    rows.append("qu,queries/unknown.jpg,,other,unknown")
    (queries / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append("qb,queries/broken.jpg,pin-000,pin-000,single")
    (root / "gt.csv").write_text("\n".join(rows) + "\n")
    PinIndex.build(read_catalogue(root / "catalogue"), root / "idx", tiny_encoder)
    return root / "idx", root / "gt.csv"


def test_eval_command_end_to_end(scored: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    index, ground_truth = scored
    code, table, _ = run(capsys, "eval", "-i", index, "--queries", ground_truth, "--threshold", "0.5",
                         "--failures", tmp_path / "failures", "--output", tmp_path / "result.json",
                         "--latency-samples", "3", "-q")
    assert code == 0
    assert "| recall@1 |" in table and "AUROC" in table and "latency" in table
    assert "| open set at threshold 0.500 (given): precision / recall |" in table
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["queries"] == {"total": 6, "known": 5, "unknown": 1, "unreadable": 1}
    assert result["retrieval"]["recall@10"] == pytest.approx(4 / 5)  # the unreadable query counts as a miss
    assert result["open_set"]["at_threshold"]["threshold"] == 0.5
    assert result["open_set"]["threshold_from"] == THRESHOLD_GIVEN
    total = result["latency_ms"]["total"]
    assert result["latency_ms"]["samples"] == 3 and 0 < total["p50"] <= total["p90"] <= total["p95"]
    assert "p50 / p90 / p95" in table
    sheets = sorted((tmp_path / "failures").glob("failures-*.png"))
    assert sheets, "the unreadable query is a failure, so at least one sheet is written"
    with Image.open(sheets[0]) as sheet:
        assert sheet.width == 3 * 256 and sheet.height % (256 + 34) == 0


def test_verified_eval_uses_the_index_calibrated_threshold_by_default(scored: tuple[Path, Path], tmp_path: Path,
                                                                      capsys) -> None:
    # regression: eval read manifest["operating_threshold"], which nothing writes, so it had no threshold
    index_dir, ground_truth = scored
    shutil.copytree(index_dir, tmp_path / "idx")
    index = PinIndex.load(tmp_path / "idx", encoder=None)
    index.replace_calibration(replace(index.calibration, unknown_below=0.37))
    code, table, _ = run(capsys, "eval", "-i", tmp_path / "idx", "--queries", ground_truth, "--json",
                         "--latency-samples", "0", "-q")
    assert code == 0
    open_set = json.loads(table)["open_set"]
    assert open_set["at_threshold"]["threshold"] == pytest.approx(0.37)
    assert open_set["threshold_from"] == THRESHOLD_CALIBRATION
    code, table, _ = run(capsys, "eval", "-i", tmp_path / "idx", "--queries", ground_truth,
                         "--latency-samples", "0", "-q")
    assert "| open set at threshold 0.370 (index calibration): precision / recall |" in table


def test_clip_only_eval_has_a_threshold_only_when_given(scored: tuple[Path, Path], capsys) -> None:
    index_dir, ground_truth = scored
    code, out, _ = run(capsys, "eval", "-i", index_dir, "--queries", ground_truth, "--no-verify", "--json",
                       "--latency-samples", "0", "-q")
    assert code == 0
    result = json.loads(out)
    assert result["open_set"]["at_threshold"] is None and result["open_set"]["threshold_from"] is None
    assert result["index"]["verified"] is False
    code, table, _ = run(capsys, "eval", "-i", index_dir, "--queries", ground_truth, "--no-verify",
                         "--latency-samples", "0", "-q")
    assert "| open set at threshold | n/a (CLIP-only scores are cosines" in table and "--threshold" in table
    index = PinIndex.load(index_dir)
    report = evaluate(index, read_queries(ground_truth), threshold=0.2, verify=False, latency_samples=0)
    assert report.metrics["open_set"]["at_threshold"]["threshold"] == 0.2
    assert report.metrics["open_set"]["threshold_from"] == THRESHOLD_GIVEN


def test_latency_of_clip_only_runs_is_split_by_stage(scored: tuple[Path, Path]) -> None:
    index_dir, ground_truth = scored
    index = PinIndex.load(index_dir)
    images = [q.image for q in read_queries(ground_truth)[:2]]
    latency = measure_latency(index, images, verify=False)
    assert latency["samples"] == 2 and {"load_encode", "search", "total"} <= latency.keys()
    assert all({"p50", "p90", "p95"} <= latency[stage].keys() for stage in ("load_encode", "search", "total"))


def test_eval_verifies_as_many_tries_as_asked_and_times_them_so(scored: tuple[Path, Path], capsys,
                                                                monkeypatch) -> None:
    from pinid.identify.recogniser import Recogniser

    index_dir, ground_truth = scored
    limits: list[int | None] = []
    real = Recogniser.identify

    def counting(self, image, clip=(), *, k=5, limit=None, **rest):
        limits.append(limit)
        return real(self, image, clip, k=k, limit=limit, **rest)

    monkeypatch.setattr(Recogniser, "identify", counting)
    code, out, _ = run(capsys, "eval", "-i", index_dir, "--queries", ground_truth, "--candidates", "7", "--json",
                       "--latency-samples", "2", "-q")
    assert code == 0
    result = json.loads(out)
    assert result["index"]["candidates"] == 7
    assert limits and set(limits) == {7}  # the scored photos and the two timed ones alike
    assert len(limits) == 5 + 2  # five readable photos scored, two timed
    limits.clear()
    code, table, _ = run(capsys, "eval", "-i", index_dir, "--queries", ground_truth, "--latency-samples", "0", "-q")
    default = PinIndex.load(index_dir, encoder=None).recogniser.config.candidates.max_tries
    assert set(limits) == {default} and f"| tries verified per photo | {default} |" in table
    code, _, err = run(capsys, "eval", "-i", index_dir, "--queries", ground_truth, "--candidates", "0", "-q")
    assert code != 0 and "--candidates" in err
