"""Replacing a directory or a file so that readers see the old one or the new one, never half of either.

A directory is written into a sibling ``.NAME.tmp-XXXXXXXX`` and swapped in.
Only one writer works on a target at a time: it holds ``.NAME.lock`` (an
``flock``, released by the kernel when the writer dies, even by ``kill -9``).
Whoever takes the lock clears the staging folders a dead writer left behind:
while the lock is free no one is writing them, so they are stale. New files
and folders get the modes the umask allows (0644 / 0755 under umask 022),
not the 0600 / 0700 of ``tempfile``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import InputError

try:
    import fcntl
except ImportError:  # not POSIX: no writer lock, and so no clearing of stale folders
    fcntl = None  # type: ignore[assignment]

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_SUFFIX_LENGTH = 8


def replace_directory_atomically(target: Path, write: Callable[[Path], None],
                                 is_replaceable: Callable[[Path], bool], *, locked: bool = False) -> None:
    """Let ``write`` fill a fresh sibling directory, then swap it in for ``target``.

    If ``write`` raises (or the process dies) the old ``target`` is untouched and
    the temporary directory is removed (by the next writer, after a ``kill -9``).
    ``is_replaceable`` guards against overwriting a directory that is not ours
    (a typo must not delete photos). A symbolic link is followed: the directory
    it points to is replaced and the link stays. ``locked=True``: the caller
    already holds :func:`output_lock` on ``target``.
    """
    target = Path(os.path.realpath(target))
    if not locked:
        with output_lock(target):
            replace_directory_atomically(target, write, is_replaceable, locked=True)
        return
    if target.exists() and not target.is_dir():
        raise InputError(f"output {target} exists and is not a directory")
    if target.is_dir() and not is_replaceable(target):
        raise InputError(f"output {target} exists and is not a pinid index; choose another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_sibling_directory(target, "tmp")
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


@contextmanager
def output_lock(target: Path) -> Iterator[Path]:
    """Be the one writer of ``target`` (its parent is created); yields ``target`` with symlinks resolved.

    Raises ``InputError`` at once if another live process holds the lock.
    On entry, the staging folders that dead writers left beside ``target``
    are removed; a backup cut off mid-swap, with ``target`` gone, is put back.
    """
    target = Path(os.path.realpath(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create folder {target.parent}: {exc.strerror or exc}") from None
    if fcntl is None:
        yield target
        return
    lock_path = target.parent / f".{target.name}.lock"
    descriptor = _acquire(lock_path, target)
    try:
        clear_stale(target)
        yield target
    finally:
        try:  # unlinked while still held: a process waiting on this file sees it is gone and retries
            os.unlink(lock_path)
        except OSError:
            pass
        os.close(descriptor)


def _acquire(lock_path: Path, target: Path) -> int:
    while True:
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc} ({lock_path})") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode("ascii", "replace").strip()
            os.close(descriptor)
            raise InputError(f"another pinid process{f' (pid {holder})' if holder.isdigit() else ''} is "
                             f"writing {target} now; wait for it to finish") from None
        except OSError:  # no locks on this file system: write without one, as before
            return descriptor
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(descriptor), current):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
            return descriptor
        os.close(descriptor)  # the previous writer removed the file we locked: lock the new one


def stale_siblings(target: Path) -> list[Path]:
    """The staging folders and backups of ``target`` that exist now (stale if no writer holds the lock)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-[{_NAME_CHARACTERS}]{{{_SUFFIX_LENGTH}}}")
    try:
        return sorted(entry for entry in target.parent.iterdir() if pattern.fullmatch(entry.name))
    except OSError:
        return []


def clear_stale(target: Path) -> None:
    """Remove what an interrupted writer of ``target`` left; call only while holding :func:`output_lock`."""
    leftovers = stale_siblings(target)
    if not os.path.lexists(target):
        backups = [p for p in leftovers if p.name.startswith(f".{target.name}.old-") and p.is_dir()]
        if backups:  # killed between the two renames of _swap_by_rename: the backup is the whole index
            newest = max(backups, key=lambda p: p.stat().st_mtime)
            os.rename(newest, target)
            leftovers.remove(newest)
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _new_sibling_directory(target: Path, kind: str) -> Path:
    """``.NAME.KIND-XXXXXXXX`` beside ``target``, made with the umask's mode (mkdtemp would make it 0700)."""
    for _ in range(100):
        suffix = "".join(secrets.choice(_NAME_CHARACTERS) for _ in range(_SUFFIX_LENGTH))
        path = target.parent / f".{target.name}.{kind}-{suffix}"
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name beside {target}")


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
    # backup exists; the backup is kept until the new directory is in place
    # (and put back by clear_stale if the process dies in that window).
    backup = _new_sibling_directory(target, "old")
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


def probe_writable(folder: Path, what: str) -> None:
    """Raise ``InputError`` unless a file can be created in ``folder``.

    Tried, not guessed: ``os.access`` says yes to root for ``/proc`` and for
    read-only mounts. The probe is an unnamed file (``O_TMPFILE``) where the
    system has them, so nothing is left behind.
    """
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {what}: {folder} is not writable ({exc.strerror or exc})") from None


def check_file_target(path: str | os.PathLike) -> Path:
    """``path`` with symlinks resolved, refused (``InputError``) if it exists and is not a regular file.

    Replacing a device (``/dev/full``), a fifo or a folder with a new file is
    never what a user asked for.
    """
    if not os.fspath(path):
        raise InputError("output file name is empty")
    real = Path(os.path.realpath(path))
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"cannot write {path}: it is a directory; give a file name")
    if not stat.S_ISREG(mode):
        raise InputError(f"cannot write {path}: it exists and is not a regular file (a device, fifo or socket)")
    return real


def new_file_mode(folder: Path) -> int:
    """The mode a new file gets in ``folder`` under this process's umask (0644 under umask 022).

    For files written by libraries that create them 0600 (safetensors): read
    from ``/proc/self/status`` where there is one, else from a probe file,
    never by setting the umask (process-wide, so racy with other threads).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    descriptor, name = _new_sibling_file(Path(folder) / "mode-probe")
    try:
        return stat.S_IMODE(os.fstat(descriptor).st_mode)
    finally:
        os.close(descriptor)
        os.unlink(name)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, fsync, rename: readers see the old file or the new one.

    A symbolic link is followed (the file it points to is replaced, the link
    stays); anything existing that is not a regular file is refused with
    ``InputError``. A new file gets the umask's mode, a replaced one keeps its own.
    """
    target = check_file_target(Path(path))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = None
    descriptor, temporary = _new_sibling_file(target)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _new_sibling_file(target: Path) -> tuple[int, str]:
    """An exclusive new ``.NAME.XXXXXXXX.tmp`` beside ``target``, created 0666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        suffix = "".join(secrets.choice(_NAME_CHARACTERS) for _ in range(_SUFFIX_LENGTH))
        name = str(target.parent / f".{target.name}.{suffix}.tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


__all__ = ["check_file_target", "clear_stale", "new_file_mode", "output_lock", "probe_writable", "replace_directory_atomically",
           "stale_siblings", "write_file_atomically"]
