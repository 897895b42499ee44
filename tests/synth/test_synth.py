"""Synthetic benchmark generator: reproducible from its seed, ground truth consistent."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pinid.cli import main
from pinid.synth import SIZES, generate
from pinid.synth.dataset import make_plan

TINY = SIZES["tiny"]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench_a")
    generate(out, TINY, seed=7, workers=1)
    return out


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _catalogue(bench: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (bench / "catalogue").glob("*/pin.json")}


def test_reproducible_byte_for_byte_and_independent_of_workers(bench, tmp_path):
    # Same seed, different worker count: identical files.
    generate(tmp_path, TINY, seed=7, workers=2)
    assert _hashes(tmp_path) == _hashes(bench)


def test_different_seeds_differ(bench, tmp_path):
    generate(tmp_path, TINY, seed=8, workers=1)
    a, b = _hashes(bench), _hashes(tmp_path)
    photos = lambda h: {v for k, v in h.items() if k.endswith(".jpg")}  # noqa: E731
    assert not photos(a) & photos(b)
    assert json.loads((tmp_path / "benchmark.json").read_text())["seed"] == 8


def test_catalogue_format(bench):
    cat = _catalogue(bench)
    assert len(cat) == len(make_plan(7, TINY).pins)
    for pin_id, meta in cat.items():
        assert {"name", "design", "colourway", "source"} <= meta.keys()
        assert meta["source"].startswith("OpenMoji ")
        pngs = list((bench / "catalogue" / pin_id).glob("*.png"))
        assert len(pngs) == 1


def test_queries_reference_catalogue_and_unknowns_do_not(bench):
    cat = _catalogue(bench)
    designs = {m["design"] for m in cat.values()}
    rows = _read_csv(bench / "queries.csv")
    assert {r["split"] for r in rows} == {"single", "colourway", "unknown"}
    for r in rows:
        assert (bench / r["image"]).is_file()
        assert r["design"] not in r["image"]  # file names must not leak the answer
        if r["split"] == "unknown":
            assert r["pin_id"] == "" and r["design"] not in designs
        else:
            assert r["pin_id"] in cat and cat[r["pin_id"]]["design"] == r["design"]
            assert (cat[r["pin_id"]]["colourway"] is not None) == (r["split"] == "colourway")


def test_board_polygons_inside_image(bench):
    from PIL import Image

    cat = _catalogue(bench)
    boards = [json.loads(line) for line in (bench / "boards.jsonl").read_text().splitlines()]
    assert boards
    for b in boards:
        w, h = Image.open(bench / b["image"]).size
        assert len(b["pins"]) >= 2
        assert len({p["pin_id"] for p in b["pins"]}) == len(b["pins"])
        for p in b["pins"]:
            assert p["pin_id"] in cat
            poly = np.asarray(p["polygon"])
            assert poly.shape == (4, 2)
            assert (poly[:, 0] >= 0).all() and (poly[:, 0] <= w).all()
            assert (poly[:, 1] >= 0).all() and (poly[:, 1] <= h).all()


def test_colourways_are_distinct_pins_of_one_design(bench):
    from PIL import Image

    cat = _catalogue(bench)
    families: dict[str, list[str]] = {}
    for pin_id, meta in cat.items():
        if meta["colourway"] is not None:
            families.setdefault(meta["design"], []).append(pin_id)
    assert families
    for design, pins in families.items():
        assert 2 <= len(pins) <= 3 and len(set(pins)) == len(pins)
        imgs = [np.asarray(Image.open(next((bench / "catalogue" / p).glob("*.png"))), np.float32) for p in pins]
        for i in range(len(imgs)):
            for j in range(i + 1, len(imgs)):
                assert np.abs(imgs[i] - imgs[j]).mean() > 2.0, (design, pins[i], pins[j])


def test_listings_groups(bench):
    rows = _read_csv(bench / "listings.csv")
    cat = _catalogue(bench)
    assert {r["kind"] for r in rows} == {"original", "reupload", "other_seller"}
    groups: dict[str, set[str]] = {}
    for r in rows:
        assert (bench / r["image"]).is_file() and r["pin_id"] in cat
        groups.setdefault(r["photo_group"], set()).add(r["pin_id"])
    assert all(len(pins) == 1 for pins in groups.values())
    for r in rows:
        if r["kind"] == "reupload":
            original = [o for o in rows if o["photo_group"] == r["photo_group"] and o["kind"] == "original"]
            assert len(original) == 1


def test_cli_refuses_non_empty_dir(tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_benchmark.py"
    spec = importlib.util.spec_from_file_location("make_benchmark", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "x").write_text("keep me")
    assert mod.main(["--size", "tiny", "-o", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "keep me"


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    generate(out, SIZES["small"], seed=0, workers=2)
    return out


def test_small_benchmark_has_enough_pins_and_photos(small_bench):
    # byte-for-byte reproducibility is checked on the tiny size (same code, a fraction of the CI time)
    counts = json.loads((small_bench / "benchmark.json").read_text())["counts"]
    assert counts["pins"] >= 45 and counts["queries"] >= 100


def test_eval_on_small_benchmark_with_tiny_model(small_bench, tiny_model_dir, tmp_path, capsys):
    # the small benchmark has 50 pins or more, so build-index self-calibrates: on a few photos, to keep CI quick
    main(["build-index", str(small_bench / "catalogue"), "-o", str(tmp_path / "idx"),
          "--model", f"local-dir:{tiny_model_dir}", "-q", "--calibrate-photos", "12"])
    capsys.readouterr()
    # a sample of 30 of its ~170 photos: verified identification takes about a second a photo on 2 cores (CI time)
    main(["eval", "-i", str(tmp_path / "idx"), "--queries", str(small_bench / "queries.csv"), "--json",
          "--failures", str(tmp_path / "failures"), "--threshold", "0.9", "--latency-samples", "5", "-q",
          "--sample", "30", "--seed", "0"])
    result = json.loads(capsys.readouterr().out)
    rows = _read_csv(small_bench / "queries.csv")
    assert len(rows) > 30
    assert result["queries"]["total"] == 30 and result["queries"]["unreadable"] == 0
    assert result["queries"]["known"] + result["queries"]["unknown"] == 30
    assert result["queries"]["known"] > 0 and result["queries"]["unknown"] > 0
    assert set(result["retrieval"]["by_split"]) == {"single", "colourway"}
    assert 0.0 <= result["retrieval"]["recall@1"] <= result["retrieval"]["recall@10"] <= 1.0
    assert 0 < result["colourway"]["queries"] < result["queries"]["known"]
    assert 0.0 <= result["open_set"]["auroc_known_vs_unknown"] <= 1.0
    assert list((tmp_path / "failures").glob("failures-*.png"))
