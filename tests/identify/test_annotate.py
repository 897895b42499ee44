"""pinid.identify.annotate: `--annotate PATH` writes a new PNG or replaces a regular file, atomically, and
refuses the input photo, folders, devices, fifos, '' and unwritable places before any work."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from pinid import _atomic
from pinid.errors import InputError
from pinid.identify.annotate import check_annotation_target, write_annotated

from tests.support import background, pin, place, run


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "board.png"
    Image.fromarray(background(320, 240)).save(path)
    return path


@pytest.fixture
def local_index(tmp_path: Path, capsys) -> Path:
    root = tmp_path / "pins"
    for seed in (1, 2):
        (root / f"pin-{seed:03d}").mkdir(parents=True)
        pin(seed).save(root / f"pin-{seed:03d}" / "front.png")
    code, _, err = run(capsys, "build-index", root, "-o", tmp_path / "idx", "--encoder", "local", "-q")
    assert code == 0, err
    return tmp_path / "idx"


def _target(case: str, photo: Path, tmp_path: Path) -> str:
    if case == "the photo":
        return str(photo)
    if case == "the photo by another path":
        (tmp_path / "sub").mkdir()
        return str(tmp_path / "sub" / ".." / photo.name)
    if case == "a symlink to the photo":
        (tmp_path / "link.png").symlink_to(photo)
        return str(tmp_path / "link.png")
    if case == "a hard link to the photo":
        os.link(photo, tmp_path / "hard.png")
        return str(tmp_path / "hard.png")
    if case == "a directory":
        (tmp_path / "folder.png").mkdir()
        return str(tmp_path / "folder.png")
    if case == "a fifo":
        os.mkfifo(tmp_path / "pipe.png")
        return str(tmp_path / "pipe.png")
    if case == "a device":  # like /dev/full, made here so that a failing guard replaces nothing of the system
        try:
            os.mknod(tmp_path / "full.png", stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except (PermissionError, AttributeError):
            pytest.skip("cannot make a device node here")
        return str(tmp_path / "full.png")
    if case == "empty":
        return ""
    if case == "/proc/x":
        if not Path("/proc").is_dir():
            pytest.skip("no /proc here")
        return "/proc/pinid-annotation.png"
    if case == "missing folder":
        return str(tmp_path / "no-such-folder" / "out.png")
    raise AssertionError(case)


CASES = [("the photo", "input photo"), ("the photo by another path", "input photo"),
         ("a symlink to the photo", "input photo"), ("a hard link to the photo", "input photo"),
         ("a directory", "directory"), ("a fifo", "not a regular file"), ("a device", "not a regular file"),
         ("empty", "needs a file name"), ("/proc/x", "not writable"), ("missing folder", "does not exist")]


def _state(path: str) -> tuple | None:
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return info.st_ino, info.st_mode, info.st_size, info.st_mtime_ns


@pytest.mark.parametrize("case, message", CASES)
def test_write_annotated_refuses(photo: Path, tmp_path: Path, case: str, message: str) -> None:
    target = _target(case, photo, tmp_path)
    before, photo_bytes = _state(target), photo.read_bytes()
    with pytest.raises(InputError, match=message) as caught:
        write_annotated(photo, [], target)
    assert "\n" not in str(caught.value)
    assert _state(target) == before and photo.read_bytes() == photo_bytes
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_dev_full_is_refused() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(InputError, match="not a regular file"):
        check_annotation_target("/dev/full")


@pytest.mark.parametrize("case, message", CASES)
def test_cli_refuses_with_exit_2_before_loading_the_index(photo: Path, tmp_path: Path, capsys, case: str,
                                                          message: str) -> None:
    target = _target(case, photo, tmp_path)
    before = _state(target)
    # the index does not exist: were the annotation checked after loading it, this would exit 5
    code, out, err = run(capsys, "identify", photo, "-i", tmp_path / "no-index", "--multi", "--annotate", target)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""
    assert _state(target) == before


def test_cli_writes_a_new_annotation_with_the_umask_mode(local_index: Path, photo: Path, tmp_path: Path,
                                                         capsys) -> None:
    board = tmp_path / "two.png"
    Image.fromarray(place(background(480, 360), pin(1), _shift(40, 40))).save(board)
    previous = os.umask(0o022)
    try:
        code, out, err = run(capsys, "identify", board, "-i", local_index, "--multi", "--annotate",
                             tmp_path / "found.png")
    finally:
        os.umask(previous)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(tmp_path / "found.png").st_mode) == 0o644
    assert Image.open(tmp_path / "found.png").size == (480, 360)


def test_replacing_an_annotation_is_atomic(photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "found.png"
    out.write_bytes(b"the previous annotation")

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic.os, "fsync", disk_full)
    with pytest.raises(InputError, match="cannot write .*No space left on device"):
        write_annotated(photo, [], out)
    assert out.read_bytes() == b"the previous annotation"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.png", "found.png"]
    monkeypatch.undo()
    assert write_annotated(photo, [], out) == out.resolve()
    assert Image.open(out).size == (320, 240)


def _shift(x: float, y: float):  # noqa: ANN202
    import numpy as np

    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def test_a_label_too_long_for_the_photo_is_cut_to_fit() -> None:
    from PIL import ImageDraw

    from pinid.identify.annotate import _fitting_label, _font

    draw, font = ImageDraw.Draw(Image.new("RGB", (10, 10))), _font(14)
    name, pin_id = "Woman Heavy Black Heart Kiss Mark Woman", "om-1f469-200d-2764-fe0f-200d-1f48b-200d-1f469"
    assert _fitting_label(draw, font, name, pin_id, "99%", 2000) == f"{name} ({pin_id}) 99%"
    assert _fitting_label(draw, font, "pin-7", "pin-7", "99%", 2000) == "pin-7 99%"  # a name that is its id
    for width in (400, 150, 60):
        label = _fitting_label(draw, font, name, pin_id, "99%", width)
        box = draw.textbbox((0, 0), label, font=font)
        assert box[2] - box[0] <= width and label.endswith("99%") and label.startswith("om")
    assert _fitting_label(draw, font, name, pin_id, "99%", 1) == "99%"
