"""The CLI end to end, through the real entry point and the tiny local-dir model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


from tests.support import corrupt_files, run




@pytest.fixture
def index_dir(make_catalogue, tiny_model_dir: Path, tmp_path: Path, capsys) -> Path:
    code, out, err = run(capsys, "build-index", make_catalogue(pins=5, images_per_pin=2), "-o", tmp_path / "idx",
                         "--model", f"local-dir:{tiny_model_dir}", "--batch-size", "4")
    assert code == 0, err
    assert "5 pins, 10 images" in out
    return tmp_path / "idx"


def test_identify_exact_image_table_and_json(index_dir: Path, tmp_path: Path, capsys) -> None:
    photo = tmp_path / "catalogue" / "pin-003" / "img1.png"
    code, out, _ = run(capsys, "identify", photo, "-i", index_dir, "-k", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(photo) and "Pin number 3 (pin-003), confidence" in lines[1] and "rank" in lines[2]
    assert lines[3].split()[:2] == ["1", "pin-003"] and "Pin number 3" in lines[3]
    assert lines[2].split()[:6] == ["rank", "pin", "id", "score", "cosine", "inliers"]  # CLIP's evidence shown
    assert float(lines[3].split()[3]) > 0.99  # the exact catalogue image: cosine 1
    code, out, _ = run(capsys, "identify", photo, "-i", index_dir, "--json")
    result = json.loads(out)[0]
    assert code == 0 and result["error"] is None and len(result["matches"]) == 5
    assert result["confidence"] > 0.5 and result["unknown"] is False
    best = result["matches"][0]
    assert best["pin_id"] == "pin-003" and best["inliers"] >= 8 and best["metadata"] == {"series": "test"}
    assert best["similarity"] > 0.99 and best["probability"] == best["score"]
    assert len(best["polygon"]) == 4
    code, out, _ = run(capsys, "identify", photo, "-i", index_dir, "--json", "--no-verify")
    best = json.loads(out)[0]["matches"][0]
    assert best["pin_id"] == "pin-003" and best["score"] >= 0.99 and "inliers" not in best


def test_build_summary_lists_three_corrupt_files(make_catalogue, tiny_model_dir: Path, tmp_path: Path,
                                                 capsys) -> None:
    root = make_catalogue(pins=17, images_per_pin=1)
    bad = corrupt_files(root / "pin-017")
    code, out, err = run(capsys, "build-index", root, "-o", tmp_path / "idx", "--model",
                         f"local-dir:{tiny_model_dir}")
    assert code == 0, err
    assert "17 pins, 17 images" in out and "images/s" in out
    skipped_lines = [line for line in out.splitlines() if line.startswith("  ")]
    for path in bad:
        assert any(line.startswith(f"  {path}:") for line in skipped_lines)


def test_identify_with_another_encoder_exits_6_naming_both(index_dir: Path, tmp_path: Path, other_model_dir: Path,
                                                           tiny_model_dir: Path, capsys) -> None:
    photo = tmp_path / "catalogue" / "pin-000" / "img0.png"
    code, out, err = run(capsys, "identify", photo, "-i", index_dir, "--model", f"local-dir:{other_model_dir}")
    assert code == 6 and out == ""
    assert err.count("\n") == 1 and err.startswith("pinid: error:")
    assert str(tiny_model_dir) in err and str(other_model_dir) in err


def test_corrupt_photo_exits_3_but_answers_the_others(index_dir: Path, tmp_path: Path, capsys) -> None:
    bad = corrupt_files(tmp_path / "bad")[0]
    good = tmp_path / "catalogue" / "pin-001" / "img0.png"
    code, out, err = run(capsys, "identify", bad, good, "-i", index_dir)
    assert code == 3
    assert "pin-001" in out and "could not be read" in out
    assert err.strip().count("\n") == 0 and str(bad) in err


@pytest.mark.parametrize("args, code, text", [
    (["identify", "x.jpg", "-i", "{tmp}/no-index"], 5, "does not exist"),
    (["build-index", "{tmp}/no-catalogue", "-o", "{tmp}/i"], 2, "does not exist"),
    (["build-index", "{tmp}/empty", "-o", "{tmp}/i", "--model", "local-dir:{tmp}/m"], 4, "no pins"),
    (["build-index", "{tmp}/cat", "-o", "{tmp}/i", "--offline"], 7, "ViT-B-32-256 (datacomp_s34b_b86k)"),
    (["info", "{tmp}/cat"], 5, "not a pinid index"),
    (["identify", "-i", "{tmp}/i"], 2, "Missing argument"),
])
def test_errors_are_one_line_with_documented_exit_codes(make_catalogue, tmp_path: Path, capsys, args, code,
                                                        text) -> None:
    (tmp_path / "empty").mkdir()
    make_catalogue(pins=1, root=tmp_path / "cat")
    (tmp_path / "cat" / "manifest.json").write_text("{}")
    got, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert got == code, err
    assert text in err
    assert "Traceback" not in err


def test_info_describes_index_without_loading_model(index_dir: Path, tiny_model_dir: Path, capsys) -> None:
    code, out, _ = run(capsys, "info", index_dir)
    assert code == 0
    assert "pins:       5" in out and "images:     10" in out and str(tiny_model_dir) in out
    code, out, _ = run(capsys, "info", index_dir, "--json")
    assert json.loads(out)["counts"] == {"pins": 5, "images": 10}


def test_info_says_whether_the_calibration_trusts_clip(index_dir: Path, capsys) -> None:
    from pinid.identify.confidence import RANKING_FEATURES, Calibration
    from pinid.index import PinIndex

    _, out, _ = run(capsys, "info", index_dir)
    assert "ranking:    CLIP unused (weight 0); aligned " in out  # the shipped calibration: fitted without CLIP
    assert ", glance +" in out and ", structure +" in out  # ... and with the glance and the structure, which it trusts
    weights = {name: 0.5 for name in RANKING_FEATURES} | {"clip_margin": 30.0, "clip_cosine": 2.0}
    trusting = Calibration((-6.0, *(weights[name] for name in RANKING_FEATURES)), (-0.3, 0.8, 0.4), 0.5, "test")
    PinIndex.load(index_dir, encoder=None).replace_calibration(trusting)
    _, out, _ = run(capsys, "info", index_dir)
    assert "ranking:    CLIP margin +30.00, cosine +2.00; aligned +0.50" in out


def test_console_script_runs(index_dir: Path, tmp_path: Path) -> None:
    pinid = Path(sys.executable).parent / "pinid"
    if not pinid.exists():
        pytest.skip("console script not installed (run pip install -e .)")
    photo = tmp_path / "catalogue" / "pin-002" / "img0.png"
    done = subprocess.run([str(pinid), "identify", str(photo), "-i", str(index_dir), "--json", "-k", "1"],
                          capture_output=True, text=True, env={**os.environ, "PINID_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["matches"][0]["pin_id"] == "pin-002"


def test_build_with_cache_reuses_embeddings(make_catalogue, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    root = make_catalogue(pins=3, images_per_pin=1)
    args = ["build-index", root, "-o", tmp_path / "idx", "--model", f"local-dir:{tiny_model_dir}",
            "--cache", tmp_path / "cache"]
    assert run(capsys, *args)[0] == 0
    assert any((tmp_path / "cache").iterdir())
    code, out, err = run(capsys, *args)
    assert code == 0 and "3 pins, 3 images" in out, err
    code, _, err = run(capsys, "build-index", root, "-o", tmp_path / "idx2", "--cache", tmp_path / "cache",
                       "--model", f"local-dir:{tmp_path / 'nothing'}")
    assert code == 7  # the model is checked before the cache is touched


def test_build_refuses_a_cache_made_by_another_encoder(make_catalogue, tiny_model_dir: Path, other_model_dir: Path,
                                                       tmp_path: Path, capsys) -> None:
    root = make_catalogue(pins=2, images_per_pin=1)
    base = ["build-index", root, "--cache", tmp_path / "cache"]
    assert run(capsys, *base, "-o", tmp_path / "a", "--model", f"local-dir:{tiny_model_dir}")[0] == 0
    code, _, err = run(capsys, *base, "-o", tmp_path / "b", "--model", f"local-dir:{other_model_dir}")
    assert code == 6 and str(tiny_model_dir) in err and str(other_model_dir) in err and "--reset-cache" in err
    assert not (tmp_path / "b").exists()
    code, out, err = run(capsys, *base, "-o", tmp_path / "b", "--model", f"local-dir:{other_model_dir}",
                         "--reset-cache")
    assert code == 0 and "2 pins, 2 images" in out, err


def test_export_model_makes_a_folder_the_index_accepts(index_dir: Path, tiny_model_dir: Path, tmp_path: Path,
                                                       capsys) -> None:
    code, out, err = run(capsys, "export-model", f"local-dir:{tiny_model_dir}", "-o", tmp_path / "exported")
    assert code == 0 and "local-dir:" in out, err
    photo = tmp_path / "catalogue" / "pin-002" / "img0.png"
    code, out, err = run(capsys, "identify", photo, "-i", index_dir, "--model", f"local-dir:{tmp_path / 'exported'}",
                         "--json", "-k", "1")
    assert code == 0, err  # same weights (by tensor digest) although the files differ
    assert json.loads(out)[0]["matches"][0]["pin_id"] == "pin-002"


# ------------------------------------------------------------- local features, --multi
@pytest.fixture
def board_catalogue(tmp_path: Path) -> Path:
    from tests.support import pin

    root = tmp_path / "pins"
    for seed in range(6):
        folder = root / f"pin-{seed:03d}"
        folder.mkdir(parents=True)
        pin(seed).save(folder / "front.png")
    return root


def test_local_only_index_from_the_cli(board_catalogue: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from tests.support import PERSPECTIVE, background, pin, place

    code, out, err = run(capsys, "build-index", board_catalogue, "-o", tmp_path / "idx", "--encoder", "local")
    assert code == 0, err
    assert "encoder none (local features only)" in out
    code, out, _ = run(capsys, "info", tmp_path / "idx")
    assert code == 0 and "none (local features only)" in out and "descriptors" in out
    photo = tmp_path / "photo.jpg"
    Image.fromarray(place(background(), pin(4), PERSPECTIVE)).save(photo, quality=92)
    stranger = tmp_path / "stranger.jpg"
    Image.fromarray(place(background(seed=5), pin(77), PERSPECTIVE)).save(stranger, quality=92)
    code, out, _ = run(capsys, "identify", photo, stranger, "-i", tmp_path / "idx", "--json")
    known, unknown = json.loads(out)
    assert code == 0
    assert known["matches"][0]["pin_id"] == "pin-004" and known["unknown"] is False
    assert unknown["unknown"] is True and unknown["confidence"] < 0.5 and unknown["matches"]
    code, out, _ = run(capsys, "identify", stranger, "-i", tmp_path / "idx")
    assert code == 0 and "unknown pin" in out
    code, _, err = run(capsys, "identify", photo, "-i", tmp_path / "idx", "--no-verify")
    assert code == 2 and "local features only" in err and err.count("\n") == 1


def test_multi_finds_both_pins_and_annotates(board_catalogue: Path, tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from tests.support import background, pin, place

    run(capsys, "build-index", board_catalogue, "-o", tmp_path / "idx", "--encoder", "local")
    left = np.array([[0.7, -0.2, 40.0], [0.2, 0.7, 80.0], [0.0, 0.0, 1.0]])
    right = np.array([[0.75, 0.1, 420.0], [-0.1, 0.8, 200.0], [0.0002, 0.0, 1.0]])
    board = tmp_path / "board.png"
    Image.fromarray(place(place(background(960, 600), pin(1), left), pin(5), right)).save(board)
    out_png = tmp_path / "annotated.png"
    code, out, err = run(capsys, "identify", board, "-i", tmp_path / "idx", "--multi", "--annotate", out_png)
    assert code == 0, err
    assert "2 pin(s) found" in out and "pin-001" in out and "pin-005" in out
    annotated = Image.open(out_png)
    assert annotated.size == (960, 600)
    original = np.asarray(Image.open(board).convert("RGB")).astype(int)
    assert (np.abs(np.asarray(annotated.convert("RGB")).astype(int) - original).sum(axis=2) > 0).mean() > 0.005
    code, out, _ = run(capsys, "identify", board, "-i", tmp_path / "idx", "--multi", "--json")
    pins = json.loads(out)[0]["pins"]
    assert sorted(p["pin_id"] for p in pins) == ["pin-001", "pin-005"] and all(len(p["polygon"]) == 4 for p in pins)


@pytest.mark.parametrize("args, message", [
    (["--annotate", "x.png"], "--annotate needs --multi"),
    (["--multi", "--no-verify"], "cannot be combined"),
])
def test_multi_option_mistakes_exit_2(board_catalogue: Path, tmp_path: Path, capsys, args, message) -> None:
    run(capsys, "build-index", board_catalogue, "-o", tmp_path / "idx", "--encoder", "local")
    code, _, err = run(capsys, "identify", board_catalogue / "pin-000" / "front.png", "-i", tmp_path / "idx", *args)
    assert code == 2 and message in err


def test_local_encoder_refuses_model_options(board_catalogue: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "build-index", board_catalogue, "-o", tmp_path / "idx", "--encoder", "local",
                       "--model", "ViT-B-32")
    assert code == 2 and "uses no model" in err and not (tmp_path / "idx").exists()
