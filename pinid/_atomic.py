"""Replacing a directory so that readers see the old one or the new one, never half of either."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import InputError

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def replace_directory_atomically(target: Path, write: Callable[[Path], None],
                                 is_replaceable: Callable[[Path], bool]) -> None:
    """Let ``write`` fill a fresh sibling directory, then swap it in for ``target``.

    If ``write`` raises (or the process dies) the old ``target`` is untouched and
    the temporary directory is removed. ``is_replaceable`` guards against
    overwriting a directory that is not ours (a typo must not delete photos).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"output {target} exists and is not a directory")
    if target.is_dir() and not is_replaceable(target):
        raise InputError(f"output {target} exists and is not a pinid index; choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(staging)
        _fsync_tree(staging)
        if target.exists():
            if not _exchange(staging, target):
                _swap_by_rename(staging, target)
                return
            shutil.rmtree(staging)  # now holds the previous version
        else:
            os.rename(staging, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _swap_by_rename(staging: Path, target: Path) -> None:
    # Fallback for systems without renameat2: a short window where only the
    # backup exists; the backup is kept until the new directory is in place.
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(backup)
    os.rename(target, backup)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, fsync, rename: readers see the old file or the new one."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
