"""`pinid calibrate INDEX --photos LABELLED.csv`: refit an index's calibration on the user's own labelled photos."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pinid.catalogue import read_catalogue
from pinid.identify.confidence import default_calibration
from pinid.index import PinIndex
from tests.support import PERSPECTIVE, background, corrupt_files, pin, place, recolour, run

DESIGNS = range(4)
TILTED = PERSPECTIVE @ [[0.9, 0.1, 10.0], [-0.05, 0.95, 0.0], [0.0, 0.0, 1.0]]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A local-features index of 4 designs in two colourways, and LABELLED.csv of photos of them and strangers."""
    root = tmp_path_factory.mktemp("calibrate")
    catalogue = root / "pins"
    for d in DESIGNS:
        for name, shot in ((f"pin-{d:03d}", pin(d)), (f"pin-{d:03d}-teal", recolour(pin(d), 150))):
            (catalogue / name).mkdir(parents=True)
            (catalogue / name / "pin.json").write_text(json.dumps({"name": name, "design": f"d{d}"}))
            shot.save(catalogue / name / "front.png")
    PinIndex.build(read_catalogue(catalogue), root / "idx", None)
    photos = root / "photos"
    photos.mkdir()
    rows = []
    for d in DESIGNS:
        for variant, shot in (("", pin(d)), ("-teal", recolour(pin(d), 150))):
            for number, homography in enumerate((PERSPECTIVE, TILTED)):
                name = f"d{d}{variant}-{number}.jpg"
                Image.fromarray(place(background(seed=d * 10 + number), shot, homography)).save(
                    photos / name, quality=92)
                rows.append((f"photos/{name}", f"pin-{d:03d}{variant}"))
    for d in (0, 1, 2):  # a colourway nobody catalogued: aligns, and its best candidate is wrong
        name = f"purple-{d}.jpg"
        Image.fromarray(place(background(seed=50 + d), recolour(pin(d), 260), PERSPECTIVE)).save(
            photos / name, quality=92)
        rows.append((f"photos/{name}", ""))
    Image.fromarray(place(background(seed=70), pin(77), PERSPECTIVE)).save(photos / "stranger.jpg", quality=92)
    rows.append(("photos/stranger.jpg", ""))
    broken = corrupt_files(root / "broken")[1]
    rows.append((str(broken.relative_to(root)), "pin-000"))
    table = root / "labelled.csv"
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([("image", "pin_id"), *rows])
    return root / "idx", table


@pytest.fixture
def index_copy(labelled: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(labelled[0], tmp_path / "idx"))


def test_calibrate_writes_a_calibration_that_identify_and_info_use(labelled, index_copy: Path, capsys) -> None:
    table = labelled[1]
    before = PinIndex.load(index_copy, encoder=None).calibration
    code, out, err = run(capsys, "calibrate", index_copy, "--photos", table, "-q")
    assert code == 0, err
    assert "20 photos used, 1 skipped" in out and "recall@1" in out and "AUROC" in out
    assert "line 22" in err and "skipped" in err  # the unreadable photo is named
    written = json.loads((index_copy / "manifest.json").read_text())["calibration"]
    after = PinIndex.load(index_copy, encoder=None).calibration  # what a later `pinid identify` answers with
    assert after != before and after.to_dict() == written
    assert after.fitted_on.startswith("20 photos from labelled.csv (16 known, 4 not in the catalogue)")
    figures = after.self_test
    assert figures is not None and figures["photos"] == 20 and figures["known"] == 16 and figures["unknown"] == 4
    assert figures["recall_at_1"] >= 0.8 and figures["auroc"] is not None and figures["auroc"] >= 0.7
    assert after.ranking[1] > 0  # more inliers, more likely the pin
    code, out, _ = run(capsys, "info", index_copy)
    assert code == 0 and "20 photos from labelled.csv" in out
    assert f"self-test:  recall@1 {figures['recall_at_1']:.3f}, AUROC {figures['auroc']:.3f}" in out
    code, out, _ = run(capsys, "identify", table.parent / "photos" / "d1-0.jpg", "-i", index_copy, "--json")
    assert code == 0 and json.loads(out)[0]["matches"][0]["pin_id"] == "pin-001"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["missing file", "missing column", "unknown pin", "too few photos", "empty"])
def test_bad_labels_exit_2_and_leave_the_manifest_alone(case: str, labelled, index_copy: Path, capsys) -> None:
    folder = labelled[1].parent
    lines = labelled[1].read_text().splitlines()
    table = {"missing file": folder / "nothing-here.csv",
             "missing column": _write(folder / "no-pin.csv", "image\nphotos/d0-0.jpg\n"),
             "unknown pin": _write(folder / "typo.csv", "\n".join([*lines[:3], "photos/d1-0.jpg,pin-999"]) + "\n"),
             "too few photos": _write(folder / "few.csv", "\n".join(lines[:4]) + "\n"),
             "empty": _write(folder / "empty.csv", "")}[case]
    expected = {"missing file": "nothing-here.csv", "missing column": "missing column(s) pin_id",
                "unknown pin": "pin id pin-999 is not in index", "too few photos": "too little to calibrate on",
                "empty": "no labelled photos"}[case]
    before = (index_copy / "manifest.json").read_bytes()
    code, out, err = run(capsys, "calibrate", index_copy, "--photos", table, "-q")
    assert code == 2 and expected in err and err.count("\n") == 1 and err.startswith("pinid: error: ")
    assert (index_copy / "manifest.json").read_bytes() == before


def test_an_index_never_calibrated_shows_no_self_test(index_copy: Path, capsys) -> None:
    code, out, _ = run(capsys, "info", index_copy)
    assert code == 0 and "self-test" not in out and default_calibration().fitted_on in out
