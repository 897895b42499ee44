"""`pinid calibrate INDEX [--photos LABELLED.csv | --simulate N]`: refit an index's calibration on the user's
own labelled photos or on simulated photos of its own catalogue; build-index runs the simulated one."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from pinid.catalogue import read_catalogue
from pinid.cli import main
from pinid.evaluation import calibrate as evaluation_calibrate
from pinid.evaluation import simulate
from pinid.evaluation.simulate import PhotoSimulator, PinImages, SimulatedPhoto, Unreadable, catalogue_pins
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


# ------------------------------------------------------------ self-calibration on simulated photos
SIMULATED = 12  # photos: enough for both fits at seed 0 on the index below, few enough to stay fast


@pytest.fixture(scope="module")
def colourways(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`pinid build-index` of 3 designs in two colourways (6 pins), self-calibrated on SIMULATED photos; its output.

    Self-calibration starts at 50 pins; here at 6 (exactly enough), which keeps
    the tests fast (the "under 50 pins" case below uses the real threshold).
    """
    root = tmp_path_factory.mktemp("simulate")
    catalogue = root / "pins"
    for d in range(3):
        for name, shot in ((f"pin-{d:03d}", pin(d)), (f"pin-{d:03d}-teal", recolour(pin(d), 150))):
            (catalogue / name).mkdir(parents=True)
            (catalogue / name / "pin.json").write_text(json.dumps({"name": name, "design": f"d{d}"}))
            shot.save(catalogue / name / "front.png")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(simulate, "SELF_CALIBRATE_MIN_PINS", 6)
        main(["build-index", str(catalogue), "-o", str(root / "idx"), "--encoder", "local", "-q",
              "--calibrate-photos", str(SIMULATED)])
    return root / "idx", out.getvalue()


def _calibration(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text())["calibration"]


def test_build_index_self_calibrates_a_catalogue_of_enough_pins(colourways: tuple[Path, str]) -> None:
    index, out = colourways
    built, calibrated = out.splitlines()
    assert built.startswith(f"Built {index}: 6 pins")  # the index is whole before the calibration starts
    written = _calibration(index)
    assert written["fitted_on"].startswith(f"{SIMULATED} simulated photos of this catalogue (seed 0, ")
    assert "not in the catalogue)" in written["fitted_on"]
    figures = written["self_test"]
    assert figures["photos"] == SIMULATED // 3 and figures["scored_on"] == f"{SIMULATED // 3} held-out simulated photos"
    assert figures["known"] + figures["unknown"] == figures["photos"] and figures["unknown"] >= 1
    assert 0.0 <= figures["recall_at_1"] <= 1.0 and 0.0 <= figures["auroc"] <= 1.0
    assert calibrated.startswith(f"Calibrated on {written['fitted_on']}; self-test recall@1 ")
    assert f"(on {SIMULATED // 3} held-out simulated photos)" in calibrated


def test_calibrate_without_photos_fits_what_build_index_fitted(colourways: tuple[Path, str], tmp_path: Path,
                                                               capsys) -> None:
    index = Path(shutil.copytree(colourways[0], tmp_path / "idx"))
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["calibration"] = default_calibration().to_dict()  # as `build-index --no-calibrate` leaves it
    (index / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = run(capsys, "calibrate", index, "--simulate", SIMULATED, "--seed", 0, "-q")
    assert code == 0, err
    assert f"{SIMULATED} simulated photos used, 0 skipped" in out and "held-out simulated photos" in out
    written, expected = _calibration(index), _calibration(colourways[0])
    assert {**written, "fitted_on": ""} == {**expected, "fitted_on": ""}  # same seed, same calibration
    assert written["fitted_on"].startswith(f"{SIMULATED} simulated photos of this catalogue (seed 0, ")
    figures = written["self_test"]
    code, out, _ = run(capsys, "info", index)
    assert code == 0 and f"calibration {written['fitted_on']}" in out
    assert (f"self-test:  recall@1 {figures['recall_at_1']:.3f}, AUROC {figures['auroc']:.3f} "
            f"(on {SIMULATED // 3} held-out simulated photos)") in out


def test_simulated_photos_come_from_the_seed_and_their_number_alone(colourways: tuple[Path, str]) -> None:
    pins = catalogue_pins(PinIndex.load(colourways[0], encoder=None))
    made = list(PhotoSimulator(pins, 0).photos(2, workers=2))  # made ahead on threads
    assert made == [PhotoSimulator(pins, 0).photo(number) for number in (0, 1)]  # and alone, in any order
    assert all(isinstance(photo, SimulatedPhoto) and photo.data[:2] == b"\xff\xd8" for photo in made)  # JPEG
    assert PhotoSimulator(pins, 1).photo(0).data != made[0].data  # another seed, another photo


def test_a_pin_playing_not_in_the_catalogue_has_its_whole_design_left_out(colourways: tuple[Path, str]) -> None:
    index = PinIndex.load(colourways[0], encoder=None)
    made = PhotoSimulator(catalogue_pins(index), 0, unknown_share=0.999).photo(0)
    assert isinstance(made, SimulatedPhoto) and not made.known
    design = made.pin_id.removesuffix("-teal")
    assert made.excluded == {design, f"{design}-teal"}  # both colourways
    everything, _ = index.verified_candidates(made.data)
    assert made.pin_id in {index.pin_of(c) for c in everything if c.aligned}  # the photo does show the pin
    ranked, _ = index.verified_candidates(made.data, exclude_pins=made.excluded)
    assert ranked and not {index.pin_of(c) for c in ranked} & made.excluded


def test_a_reference_image_that_cannot_be_read_or_made_a_pin_makes_no_photo(tmp_path: Path) -> None:
    Image.new("RGB", (50, 1), (200, 0, 0)).save(tmp_path / "line.png")
    for pins in ([PinImages("line", "line", (str(tmp_path / "line.png"),))],
                 [PinImages("gone", "gone", (str(tmp_path / "gone.png"),))]):
        made = PhotoSimulator(pins, 0).photo(0)
        assert isinstance(made, Unreadable) and made.where == pins[0].images[0]
        assert made.why in ("file not found", "cannot be made into a pin (expected an H x W x 3 image, "
                                              "got shape (1, 50, 3))")


@pytest.mark.parametrize("option", ["--simulate", "--seed"])
def test_simulated_options_with_photos_exit_2(option: str, colourways: tuple[Path, str], tmp_path: Path,
                                             capsys) -> None:
    index = colourways[0]
    before = (index / "manifest.json").read_bytes()
    table = _write(tmp_path / "labelled.csv", "image,pin_id\nphoto.jpg,pin-000\n")
    code, out, err = run(capsys, "calibrate", index, "--photos", table, option, 10)
    assert code == 2 and out == "" and f"--photos and {option} exclude each other" in err and err.count("\n") == 1
    assert (index / "manifest.json").read_bytes() == before


def test_help_gives_the_default_photo_count(capsys) -> None:
    for command in ("calibrate", "build-index"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and f"[default: {simulate.SIMULATED_PHOTOS}]" in " ".join(out.split())


def test_too_few_simulated_photos_exit_2_and_leave_the_manifest_byte_identical(colourways: tuple[Path, str],
                                                                               tmp_path: Path, capsys) -> None:
    index = Path(shutil.copytree(colourways[0], tmp_path / "idx"))
    before = (index / "manifest.json").read_bytes()
    code, out, err = run(capsys, "calibrate", index, "--simulate", 3, "-q")
    assert code == 2 and err.startswith("pinid: error: 3 simulated photos of 6 pins are too few to calibrate on (")
    assert err.count("\n") == 1 and (index / "manifest.json").read_bytes() == before


def test_unreadable_reference_images_exit_2_naming_one(colourways: tuple[Path, str], tmp_path: Path,
                                                       capsys) -> None:
    index = Path(shutil.copytree(colourways[0], tmp_path / "idx"))
    moved = colourways[0].parent / "pins"
    moved.rename(moved.with_name("pins-moved"))
    try:
        before = (index / "manifest.json").read_bytes()
        code, out, err = run(capsys, "calibrate", index, "--simulate", 6, "-q")
    finally:
        moved.with_name("pins-moved").rename(moved)
    assert code == 2 and "none of the reference images" in err and str(moved) in err and "file not found" in err
    assert (index / "manifest.json").read_bytes() == before


def _build(capsys, catalogue: Path, index: Path, *options: object) -> tuple[int, str, str]:
    return run(capsys, "build-index", catalogue, "-o", index, "--encoder", "local", "-q", *options)


@pytest.mark.parametrize("case", ["--no-calibrate", "under 50 pins", "too few photos"])
def test_build_index_keeps_the_shipped_calibration(case: str, make_catalogue, tmp_path: Path, capsys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    if case != "under 50 pins":
        monkeypatch.setattr(simulate, "SELF_CALIBRATE_MIN_PINS", 4)  # the catalogue below is big enough
    if case != "too few photos":
        monkeypatch.setattr(evaluation_calibrate, "calibrate_simulated", lambda *args, **kwargs: calls.append(args))
    options = {"--no-calibrate": ["--no-calibrate"], "under 50 pins": [],
               "too few photos": ["--calibrate-photos", 3]}[case]
    code, out, err = _build(capsys, make_catalogue(pins=4), tmp_path / "idx", *options)
    assert code == 0 and err == "" and calls == []
    assert _calibration(tmp_path / "idx") == default_calibration().to_dict()
    lines = out.splitlines()
    assert lines[0].startswith("Built ") and len(lines) == (1 if case == "--no-calibrate" else 2)
    if case == "under 50 pins":
        assert simulate.SELF_CALIBRATE_MIN_PINS == 50
        assert lines[1].startswith("Calibration: the one shipped with pinid (self-calibration needs 50 pins")
    elif case == "too few photos":  # the index is fine: exit 0, one line saying why
        assert lines[1].startswith("Calibration: kept the one shipped with pinid; 3 simulated photos of 4 pins "
                                   "are too few to calibrate on (")
