"""Every script in scripts/ runs, at its smallest size, so that none can rot unnoticed.

Each script runs in a subprocess (``sys.executable``, the repository as the
working directory) and must exit 0 and print its table. Scripts that need a
benchmark share one tiny benchmark made by ``scripts/make_benchmark.py`` once
per session, and a local-features index built from its catalogue; scripts that
need a model get the tiny random-weight checkpoint (``tiny_model_dir``).
Scripts also use only pinid's public names: no ``_private`` import or attribute.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
TIMEOUT_S = 300


def run_script(name: str, *args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/NAME`` with ``args``; fail with its output if it does not exit 0 (unless not ``check``)."""
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert not check or done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def benchmark_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The smallest benchmark, made once by the script itself (about 5 s on 2 cores)."""
    out = tmp_path_factory.mktemp("script-bench") / "bench"
    return out, run_script("make_benchmark.py", "--size", "tiny", "--seed", "0", "-o", out, "--workers", "2")


@pytest.fixture(scope="session")
def bench(benchmark_run: tuple[Path, subprocess.CompletedProcess[str]]) -> Path:
    return benchmark_run[0]


@pytest.fixture(scope="session")
def bench_index(bench: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local-features index of the benchmark's catalogue (no model)."""
    from pinid.catalogue import read_catalogue
    from pinid.index import PinIndex

    folder = tmp_path_factory.mktemp("script-index") / "idx"
    PinIndex.build(read_catalogue(bench / "catalogue"), folder, None)
    return folder


def test_make_benchmark(benchmark_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    bench, done = benchmark_run
    assert f"wrote {bench}: pins=" in done.stdout
    counts = json.loads((bench / "benchmark.json").read_text())["counts"]
    assert counts["pins"] > 0 and counts["queries"] > 0
    assert (bench / "queries.csv").is_file() and (bench / "listings.csv").is_file()


def test_bench_core(tiny_model_dir: Path) -> None:
    out = run_script("bench_core.py", "--weights", f"local-dir:{tiny_model_dir}", "--images", 2, "--queries", 3,
                     "--repeats", 1, "--sizes", "50,100", "--threads", 1).stdout
    assert "| what | result | notes |" in out
    for row in ("| forward, batch 1 |", "| pipeline, batch 32 |", "| search 50 x ", "| search 100 x ",
                "| identify, 50 pins |"):
        assert row in out


def test_bench_verify(bench_index: Path, bench: Path) -> None:
    out = run_script("bench_verify.py", bench_index, bench, "--photos", 1, "--candidates", 5,
                     "--threads", 1).stdout
    assert "1 photos, K = 5 candidates" in out and "| stage | p50 ms | p95 ms | mean ms |" in out
    for stage in ("features", "vote", "verify", "total"):
        assert f"| {stage} | " in out


def test_bench_dedup() -> None:
    out = run_script("bench_dedup.py", "--n", 300, "--dim", 16).stdout
    assert "pinid dedup benchmark: 300 listings, 16 dims" in out
    assert "| total from cache |" in out and "| precision | recall | F1 | purity |" in out


def test_eval_dedup(bench: Path, tiny_model_dir: Path) -> None:
    out = run_script("eval_dedup.py", bench, "--model", f"local-dir:{tiny_model_dir}").stdout
    assert "| setting | truth | true pairs |" in out
    assert out.count("| photo_group |") == 2 and out.count("| pin_id |") == 2


def test_fit_calibration(bench_index: Path, bench: Path, tmp_path: Path) -> None:
    from pinid.identify.confidence import Calibration

    written = tmp_path / "calibration.json"
    before = (bench_index / "manifest.json").read_bytes()
    out = run_script("fit_calibration.py", bench_index, bench, "--queries", 10, "--holdout", 2, "-o", written).stdout
    fitted = Calibration.from_dict(json.loads(written.read_text()))
    assert json.loads(out)["fitted_on"] == fitted.fitted_on and "10 photos" in fitted.fitted_on
    assert (bench_index / "manifest.json").read_bytes() == before  # without --apply the index is untouched


def test_compare_rankings(bench_index: Path, bench: Path) -> None:
    out = run_script("compare_rankings.py", bench_index, bench, "--queries", 10, "--holdout", 6).stdout
    assert "| recall@1, single | right colourway at 1 | AUROC |" in out
    for name in ("the index's own calibration", "pointwise, first order", "pointwise, with second order",
                 "photo by photo, first order", "photo by photo, with second order (pinid's fit)"):
        assert f"| {name} | " in out


def test_fit_descriptor_pca(bench: Path, tmp_path: Path) -> None:
    out = run_script("fit_descriptor_pca.py", bench / "catalogue", "-o", tmp_path / "pca.npy", "--images", 1).stdout
    assert "descriptors from 1 product shots" in out and "variance kept" in out
    table = np.load(tmp_path / "pca.npy", allow_pickle=False)
    assert table.shape == (129, 128) and np.isfinite(table).all()


def test_make_examples(tmp_path: Path) -> None:
    out = run_script("make_examples.py", "--out", tmp_path).stdout
    assert "wrote 5 pins and a photo" in out
    assert len(list((tmp_path / "catalogue").glob("*/front.png"))) == 5 and (tmp_path / "photo.jpg").is_file()


def test_probe_local_features(bench: Path) -> None:
    out = run_script("probe_local_features.py", bench, "--queries", 1).stdout
    assert "| reference features (1 single-pin queries) |" in out
    assert "| SIFT 512 px |" in out and "| + 4 simulated tilts (ASIFT-lite) |" in out


def test_bench_reference_size() -> None:
    out = run_script("bench_reference_size.py", "--side", 300).stdout
    assert "| pinid | reference side (px) | build seconds | peak RSS (MB) |" in out and "| 300 |" in out


def test_train_standin(tmp_path: Path) -> None:
    from pinid.encoder import Encoder
    from tests.support import draw_pin_image

    art = tmp_path / "art"
    art.mkdir()
    for i in range(5):
        draw_pin_image(i, 64).save(art / f"art{i}.png")
    (art / "disc.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 128 128">'
                                  '<circle cx="64" cy="64" r="50" fill="#c33"/></svg>')
    out = run_script("train_standin.py", "-o", tmp_path / "model", "--artwork", art, "--photos", 2, "--steps", 2,
                     "--batch", 4, "--image-size", 32, "--patch", 16, "--width", 32, "--layers", 1, "--embed-dim", 16,
                     "--render", 64, "--frame", "64,96").stdout
    assert "data: 6 artworks (0 skipped), 2 photos each" in out
    assert "| model | top-1 | top-5 | mean margin |" in out and "| before training (random init) |" in out
    assert "| after 2 steps (saved checkpoint, Encoder.load) |" in out
    encoder = Encoder.load(f"local-dir:{tmp_path / 'model'}", device="cpu", offline=True)
    vectors = encoder.encode_images([art / "art0.png"], workers=1).vectors
    assert vectors.shape == (1, 16) and np.isfinite(vectors).all()


def test_eval_fusion(bench: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from pinid.catalogue import read_catalogue
    from pinid.encoder import Encoder
    from pinid.index import PinIndex

    encoder = Encoder.load(f"local-dir:{tiny_model_dir}", device="cpu", offline=True)
    PinIndex.build(read_catalogue(bench / "catalogue"), tmp_path / "idx", encoder)
    out = run_script("eval_fusion.py", tmp_path / "idx", bench, "--sample", 4, "--fit-queries", 8, "--simulate", 9,
                     "--json", tmp_path / "fusion.json").stdout
    assert "| mode, calibration | recall@1 | right colourway at 1 | AUROC known vs unknown |" in out
    for row in ("CLIP only (cosine)", "local only, self-calibrated", "local only, benchmark-fitted",
                "fused, self-calibrated", "fused, benchmark-fitted"):
        assert f"| {row} | " in out
    figures = json.loads((tmp_path / "fusion.json").read_text())
    assert figures["rows"]["fused, self-calibrated"]["known"] + figures["rows"]["fused, self-calibrated"]["unknown"] == 4
    assert figures["weights"]["local only, benchmark-fitted"]["clip_margin"] == 0.0  # no CLIP evidence without it


SMOKE_TESTS: dict[str, Callable[..., None]] = {
    "bench_core.py": test_bench_core, "bench_dedup.py": test_bench_dedup, "bench_verify.py": test_bench_verify,
    "bench_reference_size.py": test_bench_reference_size,
    "compare_rankings.py": test_compare_rankings, "eval_dedup.py": test_eval_dedup,
    "eval_fusion.py": test_eval_fusion, "fit_calibration.py": test_fit_calibration,
    "fit_descriptor_pca.py": test_fit_descriptor_pca, "make_benchmark.py": test_make_benchmark,
    "make_examples.py": test_make_examples, "probe_local_features.py": test_probe_local_features,
    "train_standin.py": test_train_standin,
}


def test_bench_ray() -> None:
    out = run_script("bench_ray.py", "--images", 3, "--workers", "1", "--encoder", "local").stdout
    assert "| build | seconds | images/s | encoding s | local features s | speed-up |" in out
    assert "| one process (2 threads) |" in out and "| Ray, 1 worker |" in out


SMOKE_TESTS["bench_ray.py"] = test_bench_ray


def test_every_script_has_a_smoke_test() -> None:
    assert sorted(path.name for path in SCRIPTS.glob("*.py")) == sorted(SMOKE_TESTS)


def _private_uses(source: str) -> list[str]:
    """Names starting with one underscore that a script imports from pinid or reads as an attribute."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pinid"):
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_")]
            found += [node.module] if any(part.startswith("_") for part in node.module.split(".")) else []
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("pinid")
                      and any(part.startswith("_") for part in alias.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append(f".{node.attr}")
    return found


@pytest.mark.parametrize("script", sorted(SMOKE_TESTS))
def test_scripts_use_public_names_only(script: str) -> None:
    assert _private_uses((SCRIPTS / script).read_text(encoding="utf-8")) == []


def test_the_private_name_check_would_catch_a_reach_inside() -> None:
    source = ("from pinid.index import PinIndex, _PinTable\nfrom pinid.local.features import _sift\n"
              "import pinid._atomic\nrecogniser = index._recogniser\nname = __name__\n")
    assert _private_uses(source) == ["pinid.index._PinTable", "pinid.local.features._sift", "pinid._atomic",
                                     "._recogniser"]


def test_bench_ann() -> None:
    out = run_script("bench_ann.py", "--n", 3000, "--queries", 20, "--index-type", "ivf-sq8", "--probes", "4,8",
                     "--flat-n", 2000, "--threads", 1).stdout
    assert "| configuration | build s (<= 900) | recall@10 (>= 0.98) | p50 ms (<= 5) |" in out
    for row in ("| 3,000 x 512 ivf-sq8, 76 lists, 4 probes | ", "| 3,000 x 512 ivf-sq8, 76 lists, 8 probes | ",
                "| 2,000 x 512 flat | "):
        assert row in out


SMOKE_TESTS["bench_ann.py"] = test_bench_ann


def test_bench_local_features(tmp_path: Path) -> None:
    from tests.support import write_catalogue

    catalogue = write_catalogue(tmp_path / "catalogue", pins=2)
    out = run_script("bench_local_features.py", "--catalogue", catalogue, "--limit", "2", "--workers", "1",
                     "--long-side", "160", "--profile").stdout
    assert "| views | images | long side (px) | workers | seconds | images/s |" in out
    assert "| default | 2 | 160 | 1 |" in out and "detectAndCompute" in out


SMOKE_TESTS["bench_local_features.py"] = test_bench_local_features


def test_bench_local_features_uses_public_names_only() -> None:
    assert _private_uses((SCRIPTS / "bench_local_features.py").read_text(encoding="utf-8")) == []


def test_bench_local_scale(bench: Path, tmp_path: Path) -> None:
    out = run_script("bench_local_scale.py", "--bench", bench, "-o", tmp_path / "scale-index", "--images", 20,
                     "--real", 2, "--queries", 1, "--workers", 1, "--threads", 1).stdout
    assert "20 reference images (2 real pins, the rest synthetic copies)" in out
    for row in ("| identify RSS (fresh process, peak) | ", "| identify p50, local only (wall) | ",
                "| index size on disk | ", "| recall@1, local only | "):
        assert row in out
    assert not (tmp_path / "scale-index").exists()  # deleted once measured (--keep keeps it)


SMOKE_TESTS["bench_local_scale.py"] = test_bench_local_scale


def test_bench_local_scale_uses_public_names_only() -> None:
    assert _private_uses((SCRIPTS / "bench_local_scale.py").read_text(encoding="utf-8")) == []


def test_bench_change() -> None:
    out = run_script("bench_change.py", "--pins", 3, "--workers", 1).stdout
    assert "pins  change" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("3 ")]
    assert [" ".join(row[1:4]) for row in rows] == ["add 1 pin", "update 1 pin", "remove 1 pin"]
    written = {row[1]: float(row[5]) for row in rows}  # KB written by each change
    index_kb = float(rows[0][6])
    assert 0 < written["remove"] < index_kb  # a removal writes less than the index holds


SMOKE_TESTS["bench_change.py"] = test_bench_change


# bench_serve.py's smoke test lives beside the service's tests (it starts `pinid serve`); registered here so
# that every script has one. Imported as a module, so pytest does not collect its tests twice.
from tests.serve import test_bench_serve as _serve_smoke  # noqa: E402

SMOKE_TESTS["bench_serve.py"] = _serve_smoke.test_bench_serve_smallest_run


def test_eval_dedup_local(bench: Path, tmp_path: Path) -> None:
    out = run_script("eval_dedup_local.py", bench, "--cache", tmp_path / "cache", "--workers", 1).stdout
    assert "| setting | truth | true pairs |" in out
    assert "| photo, --encoder local | photo_group |" in out and "| pin, --encoder local | pin_id |" in out
    assert "pin-mode stages, pairs of different photos of one pin" in out
    assert (tmp_path / "cache" / "local-features" / "listings").is_dir()


SMOKE_TESTS["eval_dedup_local.py"] = test_eval_dedup_local


def test_eval_dedup_local_uses_public_names_only() -> None:
    assert _private_uses((SCRIPTS / "eval_dedup_local.py").read_text(encoding="utf-8")) == []


def test_probe_stages(bench_index: Path, bench: Path) -> None:
    out = run_script("probe_stages.py", bench_index, bench / "queries.csv", "--sample", 2).stdout
    assert "| candidates |" in out and "| first |" in out and "time p50 / p90" in out
    mirrored = run_script("probe_stages.py", bench_index, bench / "queries.csv", "--sample", 2, "--mirror",
                          "--set", "candidates.screened_candidates=0").stdout
    assert "(mirrored)" in mirrored
    both = run_script("probe_stages.py", bench_index, bench / "queries.csv", "--sample", 2, "--both").stdout
    assert "| 2 photos | as taken | mirrored |" in both and "| first, this way only (photos) |" in both
    shares = [line for line in both.splitlines() if line.startswith("| first |")][0].split("|")[2:4]
    assert all(0.0 <= float(share) <= 1.0 for share in shares)


SMOKE_TESTS["probe_stages.py"] = test_probe_stages


def test_compare_settings(bench_index: Path, bench: Path) -> None:
    out = run_script("compare_settings.py", bench_index, bench / "queries.csv", "--sample", 3, "--seed", 0,
                     "--b", "candidates.max_tries=2", "--b", "features.max_query_features=300").stdout
    assert "3 photos" in out and "| a: as the index | " in out
    assert "| b: candidates.max_tries=2 features.max_query_features=300 | " in out
    assert "right under b only: " in out
    bad = run_script("compare_settings.py", bench_index, bench / "queries.csv", "--b", "candidates.max_triez=2",
                     check=False)
    assert bad.returncode == 2 and "unknown setting" in bad.stderr and "Traceback" not in bad.stderr


SMOKE_TESTS["compare_settings.py"] = test_compare_settings
