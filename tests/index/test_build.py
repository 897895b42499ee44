"""pinid.index.build: the output is checked before any work, never a user's folder replaced, interrupted and
killed builds leave nothing behind, umask modes, large reference images reduced."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pinid.catalogue import read_catalogue
from pinid.errors import InputError
from pinid.index import build as build_module
from pinid.index.build import build_index, check_output
from pinid.local.features import FeatureConfig

from pinid.index import PinIndex
from pinid.index.format import is_index_directory
from tests.support import draw_pin_image, run

REFERENCE_LONG_SIDE_PX = FeatureConfig().reference_long_side_px


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _debris(parent: Path, name: str = "idx") -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


@pytest.fixture
def local_index(make_catalogue, tmp_path: Path) -> Path:
    """A local-features index of 3 pins at tmp_path/idx (the catalogue at tmp_path/catalogue)."""
    build_index(read_catalogue(make_catalogue(pins=3)), tmp_path / "idx", None)
    return tmp_path / "idx"




# ------------------------------------------------------------- never a user's folder
def test_catalogue_with_a_manifest_json_is_not_replaced_by_its_own_index(make_catalogue, capsys) -> None:
    catalogue = make_catalogue(pins=2)
    (catalogue / "manifest.json").write_text("{}\n")
    before = _snapshot(catalogue)
    code, _, err = run(capsys, "build-index", catalogue, "-o", catalogue, "--encoder", "local")
    assert code == 2 and "is the catalogue itself" in err and err.count("\n") == 1
    assert _snapshot(catalogue) == before


@pytest.mark.parametrize("contents", [
    {"manifest.json": "{}"},
    {"manifest.json": "{}", "holiday.jpg": "precious"},
    {"manifest.json": '{"format": "pinid-index"}', "holiday.jpg": "precious"},
    {"manifest.json": '{"format": "something-else"}', "catalogue.sqlite": "x"},
])
def test_a_folder_that_is_not_an_index_is_refused_and_kept(make_catalogue, tmp_path: Path, capsys,
                                                           contents: dict[str, str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).write_text(text)
    before = _snapshot(folder)
    assert not is_index_directory(folder)
    code, _, err = run(capsys, "build-index", make_catalogue(pins=2), "-o", folder, "--encoder", "local")
    assert code == 2 and "is not a pinid index" in err and err.count("\n") == 1
    assert _snapshot(folder) == before and _debris(tmp_path, "photos") == []


# ------------------------------------------------------------- -o checked first
@pytest.mark.parametrize("case, message", [
    ("empty", "empty"),
    (".", "names no index directory"),
    ("..", "names no index directory"),
    ("proc", "not writable"),
    ("file/x", "is not a folder"),
    ("a file", "exists and is not a directory"),
    ("catalogue", "is the catalogue itself"),
    ("inside catalogue", "is inside the catalogue"),
    ("holds catalogue", "holds the catalogue"),
    ("symlink loop", "cannot be resolved"),
    ("cwd", "current directory"),
])
def test_unusable_output_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
                                           message: str) -> None:
    catalogue = tmp_path / "outer" / "catalogue"
    catalogue.mkdir(parents=True)
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    target = {"empty": "", ".": ".", "..": "..", "proc": "/proc/pinid-x", "file/x": str(tmp_path / "file" / "x"),
              "a file": str(tmp_path / "file"), "catalogue": str(catalogue),
              "inside catalogue": str(catalogue / "idx"), "holds catalogue": str(tmp_path / "outer"),
              "symlink loop": str(tmp_path / "loop"), "cwd": str(tmp_path / "work" / ".." / "work")}[case]
    if case == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    with pytest.raises(InputError, match=message) as caught:
        check_output(target, catalogue)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "loop", "outer", "work"]


def test_new_or_empty_or_index_output_is_accepted(local_index: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", tmp_path / "catalogue") == (tmp_path / "empty").resolve()
    assert check_output(tmp_path / "new" / "deeper" / "idx", tmp_path / "catalogue") == \
        (tmp_path / "new" / "deeper" / "idx").resolve()
    assert check_output(local_index, tmp_path / "catalogue") == local_index.resolve()
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_bad_output_is_refused_before_any_image_is_read(make_catalogue, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("local features were extracted before the output was checked")

    monkeypatch.setattr(build_module, "reference_entry", never)
    (tmp_path / "file").write_text("x")
    catalogue = read_catalogue(make_catalogue(pins=2))
    with pytest.raises(InputError, match="is not a folder"):
        build_index(catalogue, tmp_path / "file" / "x", None)
    with pytest.raises(InputError, match="inside the catalogue"):
        build_index(catalogue, catalogue.source / "idx", None)


def test_cli_checks_the_output_before_loading_the_model(make_catalogue, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "build-index", make_catalogue(pins=2), "-o", tmp_path / "file" / "x",
                       "--model", f"local-dir:{tmp_path / 'no-such-model'}")
    assert code == 2 and "is not a folder" in err and err.count("\n") == 1


def test_empty_output_from_the_cli(make_catalogue, capsys) -> None:
    code, _, err = run(capsys, "build-index", make_catalogue(pins=2), "-o", "", "--encoder", "local")
    assert code == 2 and "output path is empty" in err and err.count("\n") == 1


# ------------------------------------------------------------- symlinks
def test_symlink_to_an_index_replaces_the_index_and_keeps_the_link(local_index: Path, make_catalogue,
                                                                   tmp_path: Path, capsys) -> None:
    link = tmp_path / "current"
    link.symlink_to(local_index.name)
    bigger = make_catalogue(pins=5, root=tmp_path / "bigger", seed=4)
    code, out, err = run(capsys, "build-index", bigger, "-o", link, "--encoder", "local", "-q")
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == local_index.name
    code, out, _ = run(capsys, "info", local_index, "--json")
    assert code == 0 and '"pins": 5' in out
    assert _debris(tmp_path) == [] and _debris(tmp_path, "current") == []


# ------------------------------------------------------------- one writer; debris of dead writers
def test_next_build_removes_what_a_killed_build_left(local_index: Path, make_catalogue, tmp_path: Path) -> None:
    for name in (".idx.tmp-abcd1234", ".idx.old-efgh5678"):
        (tmp_path / name / "local").mkdir(parents=True)
        (tmp_path / name / "manifest.json").write_text("{}")
    (tmp_path / ".idx.lock").write_text("99999999\n")
    build_index(read_catalogue(make_catalogue(pins=4, root=tmp_path / "four")), local_index, None)
    assert _debris(tmp_path) == []


def test_a_second_build_of_the_same_target_is_refused_before_work(local_index: Path, make_catalogue,
                                                                   tmp_path: Path) -> None:
    from pinid._atomic import output_lock

    before = _snapshot(local_index)
    with output_lock(local_index):
        with pytest.raises(InputError, match="is writing"):
            build_index(read_catalogue(tmp_path / "catalogue"), local_index, None)
    assert _snapshot(local_index) == before and _debris(tmp_path) == []


def _slow_catalogue(root: Path, images: int = 40) -> Path:
    for number in range(images):
        folder = root / f"pin-{number:03d}"
        folder.mkdir(parents=True)
        draw_pin_image(5000 + number, size=768).save(folder / "front.png")
    return root


def _start_build(catalogue: Path, target: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", "from pinid.cli import main; main()", "build-index", str(catalogue), "-o",
         str(target), "--encoder", "local", "--workers", "1", "-q"],
        cwd=target.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = target.parent / f".{target.name}.lock"
    deadline = time.monotonic() + 60
    while not lock.exists():  # the lock is taken after the output check, before the first image
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the build never started: {process.communicate()}")
        time.sleep(0.02)
    time.sleep(0.3)
    assert process.poll() is None, "the build ended before it could be interrupted: make the catalogue slower"
    return process


def test_sigterm_ends_a_build_with_one_line_code_143_and_no_debris(local_index: Path, tmp_path: Path) -> None:
    before = _snapshot(local_index)
    process = _start_build(_slow_catalogue(tmp_path / "slow"), local_index)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err == "pinid: interrupted\n" and out == ""
    assert _snapshot(local_index) == before and _debris(tmp_path) == []


def test_after_kill_9_the_next_build_clears_up(local_index: Path, tmp_path: Path) -> None:
    before = _snapshot(local_index)
    process = _start_build(_slow_catalogue(tmp_path / "slow", images=24), local_index)
    process.kill()
    process.communicate(timeout=60)
    assert _snapshot(local_index) == before
    assert _debris(tmp_path) == [".idx.lock"]  # the killed writer's lock file, no longer locked
    build_index(read_catalogue(tmp_path / "catalogue"), local_index, None)
    assert _debris(tmp_path) == []


_TERMINATED_WHILE_WRITING = """
import os, signal, sys, time
from pinid.index import build
written = build.write_database

def write_then_sigterm(path, rows, *known):
    written(path, rows, *known)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)  # SIGTERM arrives first

build.write_database = write_then_sigterm
from pinid.cli import main
main()
"""


def test_sigterm_while_the_index_is_written_removes_the_staging_folder(local_index: Path, tmp_path: Path) -> None:
    before = _snapshot(local_index)
    done = subprocess.run([sys.executable, "-c", _TERMINATED_WHILE_WRITING, "build-index", str(tmp_path / "catalogue"),
                           "-o", str(local_index), "--encoder", "local", "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 143 and done.stderr == "pinid: interrupted\n", done.stderr
    assert _snapshot(local_index) == before and _debris(tmp_path) == []


def test_main_restores_the_sigterm_handler(make_catalogue, capsys) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    run(capsys, "build-index", make_catalogue(pins=1), "-o", "", "--encoder", "local")
    assert signal.getsignal(signal.SIGTERM) == previous


# ------------------------------------------------------------- modes
@pytest.mark.parametrize("umask, folders, files", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)],
                         ids=["umask-022", "umask-027"])
def test_index_gets_the_umask_modes(make_catalogue, tmp_path: Path, umask: int, folders: int, files: int) -> None:
    previous = os.umask(umask)
    try:
        build_index(read_catalogue(make_catalogue(pins=2)), tmp_path / "idx", None)
    finally:
        os.umask(previous)
    index = tmp_path / "idx"
    for path in [index, *index.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (folders if path.is_dir() else files), path


# ------------------------------------------------------------- large reference images
def test_a_large_reference_image_is_reduced_before_local_features(tmp_path: Path) -> None:
    root = tmp_path / "catalogue"
    for name, side in (("big", REFERENCE_LONG_SIDE_PX + 152), ("normal", 128)):
        (root / name).mkdir(parents=True)
        draw_pin_image(len(name), size=side).save(root / name / "front.png")
    report = build_index(read_catalogue(root), tmp_path / "idx", None)
    assert report.images == 2 and not report.skipped
    geometry = np.load(tmp_path / "idx" / "local" / "000000" / "geometry.npy")
    assert sorted(geometry[:, 0].tolist()) == [128, REFERENCE_LONG_SIDE_PX]
    assert geometry[:, 2:].max() <= REFERENCE_LONG_SIDE_PX  # pin boxes in the reduced image's pixels


def test_normal_size_reference_images_are_used_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "shot.png"
    image = draw_pin_image(3, size=1500)
    image.save(path)
    assert np.array_equal(np.asarray(build_module.reference_image(path)), np.asarray(image))


def test_the_cache_covers_local_features_so_rebuilds_extract_nothing_and_an_interrupted_build_resumes(
        tmp_path: Path, make_catalogue: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from pinid.local.cache import FeatureCache

    root = make_catalogue(pins=6)
    extracted: list[Path] = []
    real = build_module.reference_image

    def interrupted_after_three(path: Path, *args: Any, **kwargs: Any) -> Any:
        if len(extracted) == 3:
            raise KeyboardInterrupt
        extracted.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(build_module, "reference_image", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        with FeatureCache.open(tmp_path / "cache" / "local-features", FeatureConfig()) as cache:
            PinIndex.build(read_catalogue(root), tmp_path / "idx", None, workers=1, feature_cache=cache)
    assert not (tmp_path / "idx").exists() and len(extracted) == 3

    counted: list[Path] = []

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        counted.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(build_module, "reference_image", counting)
    code, out, err = run(capsys, "build-index", root, "-o", tmp_path / "idx", "--encoder", "local",
                         "--cache", tmp_path / "cache", "-q", "--no-calibrate")
    assert code == 0, err
    assert sorted(counted) == sorted(set(p for pin_dir in root.iterdir() for p in pin_dir.glob("*.png"))
                                     - set(extracted))  # the three extracted before the interruption are reused
    counted.clear()
    code, out, err = run(capsys, "build-index", root, "-o", tmp_path / "idx", "--encoder", "local",
                         "--cache", tmp_path / "cache", "-q", "--no-calibrate")
    assert code == 0 and counted == []
    fresh = PinIndex.build(read_catalogue(root), tmp_path / "fresh", None)
    cached = PinIndex.load(tmp_path / "idx")
    assert cached.manifest.descriptors == fresh.manifest.descriptors
    for image_id in range(6):
        a, b = cached.recogniser.store.entry(image_id), fresh.recogniser.store.entry(image_id)
        assert np.array_equal(a.features.descriptors, b.features.descriptors)
        assert np.array_equal(a.colour, b.colour) and a.pin_box == pytest.approx(b.pin_box)


def test_fast_views_are_recorded_and_used_by_later_changes(tmp_path: Path, make_catalogue: Any,
                                                          capsys: pytest.CaptureFixture) -> None:
    root = make_catalogue(pins=2)
    code, _, err = run(capsys, "build-index", root, "-o", tmp_path / "idx", "--encoder", "local", "--views", "fast",
                       "-q", "--no-calibrate")
    assert code == 0, err
    index = PinIndex.load(tmp_path / "idx")
    assert index.manifest.config().features == FeatureConfig.fast() != FeatureConfig()
    default = PinIndex.build(read_catalogue(root), tmp_path / "default", None)
    assert index.manifest.images == default.manifest.images
    assert index.recogniser.store.live_rows < default.recogniser.store.live_rows  # fewer views, fewer features
