"""pinid._atomic: one writer per target, stale staging folders cleared, umask modes, no file replaced by surprise."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pinid import _atomic
from pinid._atomic import (check_file_target, clear_stale, new_file_mode, output_lock, replace_directory_atomically,
                           write_file_atomically)
from pinid.errors import InputError




def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _fill(folder: Path, text: str = "new") -> None:
    (folder / "data.txt").write_text(text)
    (folder / "sub").mkdir()


def _debris(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_replaced_directory_gets_the_umask_mode_not_0700(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "out"
    replace_directory_atomically(target, _fill, is_replaceable=lambda p: True)
    assert _mode(target) == 0o755 and _mode(target / "data.txt") == 0o644
    replace_directory_atomically(target, _fill, is_replaceable=lambda p: True)  # the swap path too
    assert _mode(target) == 0o755 and _debris(tmp_path) == []


def test_written_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_own(tmp_path: Path, umask_022: None) -> None:
    new = tmp_path / "new.png"
    write_file_atomically(new, b"one")
    assert _mode(new) == 0o644 and new.read_bytes() == b"one"
    private = tmp_path / "private.json"
    private.write_text("{}")
    os.chmod(private, 0o600)
    write_file_atomically(private, b"two")
    assert _mode(private) == 0o600 and private.read_bytes() == b"two"
    assert new_file_mode(tmp_path) == 0o644
    os.umask(0o027)
    assert new_file_mode(tmp_path) == 0o640


def test_write_follows_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_file_atomically(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_write_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path / "folder"
        path.mkdir()
    elif kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    else:  # a node like /dev/full, made here: were the guard to fail, nothing of the system is replaced
        path = tmp_path / "full"
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except (PermissionError, AttributeError):
            pytest.skip("cannot make a device node here")
    before = os.stat(path)
    with pytest.raises(InputError, match="directory|not a regular file"):
        write_file_atomically(path, b"data")
    after = os.stat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert _debris(tmp_path) == []


def test_dev_full_is_refused_as_a_file_target() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(InputError, match="not a regular file"):
        check_file_target("/dev/full")


def test_check_file_target_refuses_an_empty_name() -> None:
    with pytest.raises(InputError, match="empty"):
        check_file_target("")
    with pytest.raises(InputError, match="directory"):
        check_file_target(Path(""))  # Path("") is "."


def test_a_failed_directory_write_leaves_nothing_and_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    replace_directory_atomically(target, lambda folder: _fill(folder, "old"), is_replaceable=lambda p: True)

    def fails(folder: Path) -> None:
        _fill(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_directory_atomically(target, fails, is_replaceable=lambda p: True)
    assert (target / "data.txt").read_text() == "old" and _debris(tmp_path) == []


def test_symlink_to_a_directory_replaces_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "index-v1"
    replace_directory_atomically(real, lambda folder: _fill(folder, "old"), is_replaceable=lambda p: True)
    link = tmp_path / "current"
    link.symlink_to(real.name)
    replace_directory_atomically(link, _fill, is_replaceable=lambda p: True)
    assert link.is_symlink() and os.readlink(link) == real.name
    assert (real / "data.txt").read_text() == "new" and _debris(tmp_path) == []


def test_lock_clears_stale_staging_folders_of_this_target_only(tmp_path: Path) -> None:
    target = tmp_path / "idx"
    target.mkdir()
    stale = [tmp_path / ".idx.tmp-abcd1234", tmp_path / ".idx.old-zz_09xyz"]
    for folder in stale:
        (folder / "local").mkdir(parents=True)
    others = [tmp_path / ".other.tmp-abcd1234", tmp_path / ".idx.tmp-x.tmp-abcd1234", tmp_path / ".idx.tmp-short"]
    for folder in others:
        folder.mkdir()
    (tmp_path / ".idx.lock").write_text("12345\n")  # left by a writer killed with kill -9: no flock on it
    with output_lock(target):
        assert not any(folder.exists() for folder in stale)
    assert all(folder.exists() for folder in others)
    assert not (tmp_path / ".idx.lock").exists()


def test_a_live_writer_is_not_disturbed(tmp_path: Path) -> None:
    target = tmp_path / "idx"
    with output_lock(target):
        staging = tmp_path / ".idx.tmp-abcd1234"
        staging.mkdir()
        with pytest.raises(InputError, match=rf"another pinid process \(pid {os.getpid()}\) is writing"):
            replace_directory_atomically(target, _fill, is_replaceable=lambda p: True)
        assert staging.exists()
    with output_lock(target):  # free again: now it is stale
        assert not staging.exists()


def test_backup_of_a_swap_cut_between_its_renames_is_put_back(tmp_path: Path) -> None:
    backup = tmp_path / ".idx.old-abcd1234"
    backup.mkdir()
    _fill(backup, "previous")
    with output_lock(tmp_path / "idx"):
        pass
    assert (tmp_path / "idx" / "data.txt").read_text() == "previous" and _debris(tmp_path) == []


def test_clear_stale_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "idx"
    target.mkdir()
    _fill(target, "current")
    (tmp_path / ".idx.old-abcd1234").mkdir()
    clear_stale(target)
    assert (target / "data.txt").read_text() == "current" and _debris(tmp_path) == []


def test_swap_without_renameat2_leaves_no_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    replace_directory_atomically(target, lambda folder: _fill(folder, "old"), is_replaceable=lambda p: True)
    replace_directory_atomically(target, _fill, is_replaceable=lambda p: True)
    assert (target / "data.txt").read_text() == "new" and _debris(tmp_path) == []


def test_exported_weights_get_the_umask_modes(tmp_path: Path, umask_022: None) -> None:
    from pinid.encoder import save_local_dir

    from tests.support import TINY_MODEL_CFG

    folder = save_local_dir(tmp_path / "model", model_cfg=TINY_MODEL_CFG, random_weights=True)
    assert _mode(folder) == 0o755
    assert {p.name: _mode(p) for p in folder.iterdir()} == {name: 0o644 for name in
                                                             ("open_clip_config.json", "open_clip_model.safetensors")}
