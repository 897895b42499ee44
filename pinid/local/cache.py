"""Local features of reference images on disk, keyed by file content and by the feature settings.

Extracting a product shot's local features takes about a second; a rebuild or
an ``add`` should pay that only for images it has not seen. Entries are keyed
by the sha256 of the file's bytes (renames cost nothing; an edited file is a
new entry) and live in a sub-folder per feature-settings identity, so entries
made with other settings, another pinid feature format, another PCA table or
another OpenCV are never returned: changing settings just gives misses.
Layout (no pickle; feature arrays are memory-mapped)::

    CACHE_DIR/local-features/
      s-0123456789abcdef/              one folder per settings identity (hash of settings.json's identity)
        settings.json                  format, format version, identity
        .lock                          held by the one process that writes (others only read)
        chunk-000001.images.npy        (n, 4) int64: first keypoint row, end row, width, height
        chunk-000001.boxes.npy         (n, 4) float64: pin box x0, y0, x1, y1
        chunk-000001.keypoints.npy     (N, 4) float32: x, y, size, angle
        chunk-000001.descriptors.npy   (N, 64) uint8 PCA-RootSIFT codes
        chunk-000001.colour.npy        (n, 48, 48, 4) uint8 Lab thumbnail + pin mask
        chunk-000001.keys.npy          (n, 32) uint8 sha256 digests; written last, so it marks the chunk whole

Each file is written atomically and the keys file last, so a writer killed
mid-chunk leaves a chunk without keys, which is ignored (and removed by the
next writer); a damaged chunk only costs re-extracting its images. Puts are
buffered and written as a chunk every ``chunk_size`` entries, so an
interrupted build loses at most one chunk. One process writes a settings
folder at a time (an ``flock``); another one opening it meanwhile reads only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .._atomic import write_file_atomically
from ..errors import InputError
from ..tables import read_json_object
from .features import DESCRIPTOR_DIMS, EXTRACTION_VERSION, THUMBNAIL_SIDE, FeatureConfig, Features, ReferenceEntry

try:
    import fcntl
except ImportError:  # not POSIX: no writer lock (and so no clearing of temporaries)
    fcntl = None  # type: ignore[assignment]

FORMAT_NAME = "pinid-local-feature-cache"
FORMAT_VERSION = 1
META_FILE = "settings.json"
LOCK_FILE = ".lock"
CHUNK_SIZE = 64  # entries per chunk: what an interruption can lose (~64 s of extraction)
_PARTS = ("images", "boxes", "keypoints", "descriptors", "colour")  # written in this order, then keys
_MAPPED = ("keypoints", "descriptors", "colour")  # memory-mapped on first use; images and boxes are read whole
_CHUNK = re.compile(r"^chunk-(\d{6})\.keys\.npy$")
_CHUNK_FILE = re.compile(r"^chunk-(\d{6})\.(keys|images|boxes|keypoints|descriptors|colour)\.npy$")
_TEMPORARY = re.compile(r"^\.(settings\.json|chunk-\d{6}\.(keys|images|boxes|keypoints|descriptors|colour)\.npy)"
                        r"\..+\.tmp$")  # write_file_atomically's
_SETTINGS_FOLDER = re.compile(r"^s-[0-9a-f]{16}$")
_COMPACT_ABOVE = 64  # merge small chunks once there are more than this many (a build writes one per 64 images)
_COMPACT_TARGET = 1024  # entries per merged chunk (~64 MB in memory while merging)
_OPEN_CHUNKS = 32  # chunks whose arrays stay mapped at once (each mapping holds a file descriptor)


def feature_identity(config: FeatureConfig) -> dict[str, Any]:
    """Everything that decides what ``reference_entry`` returns for given bytes: the cache's key besides them."""
    import cv2
    from importlib import resources

    pca = resources.files("pinid.local").joinpath("rootsift_pca.npy").read_bytes()
    return {"features": config.to_dict(), "extraction_version": EXTRACTION_VERSION,
            "pca_sha256": hashlib.sha256(pca).hexdigest(), "opencv_version": cv2.__version__}


class FeatureCache:
    """Content hash -> ``ReferenceEntry`` for one feature-settings identity. Open with :meth:`open`."""

    def __init__(self, folder: Path, identity: dict[str, Any], lock: int | None, writable: bool,
                 chunk_size: int = CHUNK_SIZE) -> None:
        self.folder = folder
        self.identity = identity
        self.writable = writable
        self.chunk_size = max(1, chunk_size)
        self._lock = lock
        self._chunks: list[_Chunk] = []
        self._where: dict[bytes, tuple[int, int]] = {}  # digest -> (chunk position, row)
        self._pending: dict[bytes, ReferenceEntry] = {}
        self._mapped: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._next_number = 1
        self._load_chunks()

    @classmethod
    def open(cls, folder: str | os.PathLike, config: FeatureConfig, *, reset: bool = False,
             chunk_size: int = CHUNK_SIZE) -> "FeatureCache":
        """Open or create the cache for ``config`` under ``folder`` (``CACHE_DIR/local-features``).

        ``reset`` discards this settings' entries (and recovers a damaged
        ``settings.json``); other settings' folders are left alone. If another
        live process is writing the same settings folder, this one only reads
        (``writable`` is False and puts are dropped): the cache only saves work.
        """
        root = Path(folder).expanduser()
        if root.exists() and not root.is_dir():
            raise InputError(f"local-feature cache {root} exists and is not a directory")
        identity = feature_identity(config)
        path = root / _settings_folder(identity)
        if path.exists() and not path.is_dir():
            raise InputError(f"local-feature cache {path} exists and is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create local-feature cache {path}: {exc.strerror or exc}") from None
        lock, writable = _try_lock(path)
        try:
            meta_path = path / META_FILE
            names = [entry.name for entry in path.iterdir() if entry.name != LOCK_FILE]
            if names:
                if not meta_path.is_file():
                    if not all(_is_cache_file(name) for name in names):
                        raise InputError(f"local-feature cache {path} holds files that are not pinid's; "
                                         "choose another --cache")
                    if writable:  # a writer killed before its settings.json: only our own files are here
                        _clear(path)
                else:
                    meta = _read_meta(meta_path, reset)
                    if meta is None or reset:  # damaged and reset asked for, or reset
                        if not writable:
                            raise InputError(f"local-feature cache {path} is in use by another pinid process; "
                                             "reset it when that one has finished")
                        if not all(_is_cache_file(name) for name in names):
                            raise InputError(f"local-feature cache {path} holds files that are not pinid's, so "
                                             "--reset-cache leaves it alone; choose another --cache")
                        _clear(path)
                    elif meta.get("format_version") != FORMAT_VERSION or meta.get("identity") != identity:
                        raise InputError(f"local-feature cache {path}: {META_FILE} does not describe this "
                                         "folder's settings (edited or copied by hand?); pass --reset-cache "
                                         "to discard it")
            if writable:
                _clear_temporaries(path)
                if not meta_path.is_file():
                    write_file_atomically(meta_path, (json.dumps(
                        {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "identity": identity},
                        indent=2) + "\n").encode())
            return cls(path, identity, lock, writable, chunk_size)
        except BaseException:
            _unlock(lock)
            raise

    # ----------------------------------------------------------------- read
    def __len__(self) -> int:
        return len(self._where) + len(self._pending)  # put never buffers a digest already on disk

    def __contains__(self, digest: object) -> bool:
        return digest in self._where or digest in self._pending

    def get(self, digest: bytes) -> ReferenceEntry | None:
        """The entry for a file's sha256 digest, or ``None`` (a miss, or a chunk found damaged now)."""
        pending = self._pending.get(digest)
        if pending is not None:
            return pending
        where = self._where.get(digest)
        if where is None:
            return None
        position, row = where
        chunk = self._chunks[position]
        arrays = self._arrays(position)
        if arrays is None:
            return None
        start, end, width, height = (int(v) for v in chunk.images[row])
        features = Features(np.array(arrays["keypoints"][start:end]), np.array(arrays["descriptors"][start:end]),
                            width, height)
        box = tuple(float(v) for v in chunk.boxes[row])
        return ReferenceEntry(features, box, np.array(arrays["colour"][row]))  # type: ignore[arg-type]

    # ---------------------------------------------------------------- write
    def put(self, digest: bytes, entry: ReferenceEntry) -> None:
        """Remember ``entry`` for a file's digest; a chunk is written every ``chunk_size`` entries."""
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ValueError("digest must be the 32 bytes of a sha256")
        if not self.writable or digest in self:
            return
        self._pending[digest] = entry
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        """Write buffered entries as one chunk, atomically (keys last), and make them readable from disk."""
        if not self._pending or not self.writable:
            self._pending.clear()
            return
        digests = list(self._pending)
        entries = [self._pending[d] for d in digests]
        self._write_chunk(digests, entries)
        self._pending.clear()
        self.compact()

    def compact(self) -> bool:
        """Merge small chunks into chunks of about ``_COMPACT_TARGET`` entries once there are many; True if it did.

        A merged chunk is written whole before the chunks it replaces are
        removed (keys first); a crash in between leaves duplicates, which are
        harmless. Memory is bounded by one merged chunk.
        """
        if not self.writable:
            return False
        small = [i for i, chunk in enumerate(self._chunks) if len(chunk.keys) < _COMPACT_TARGET // 2]
        if len(small) <= _COMPACT_ABOVE:
            return False
        groups: list[list[int]] = [[]]
        count = 0
        for position in small:
            if groups[-1] and count + len(self._chunks[position].keys) > _COMPACT_TARGET:
                groups.append([])
                count = 0
            groups[-1].append(position)
            count += len(self._chunks[position].keys)
        merged = False
        for group in groups:
            if len(group) < 2:
                continue
            digests, entries = [], []
            for position in group:
                for key in self._chunks[position].keys:
                    digest = key.tobytes()
                    if self._where.get(digest, (None,))[0] != position:
                        continue  # a duplicate that a later chunk holds
                    entry = self.get(digest)
                    if entry is not None:
                        digests.append(digest)
                        entries.append(entry)
            old = [self._chunks[position] for position in group]
            self._write_chunk(digests, entries)
            for chunk in old:
                for part in ("keys",) + _PARTS:  # keys first: the chunk stops counting at once
                    (self.folder / f"chunk-{chunk.number:06d}.{part}.npy").unlink(missing_ok=True)
            merged = True
        if merged:
            self._mapped.clear()
            self._chunks, self._where = [], {}
            self._load_chunks()
        return merged

    def close(self) -> None:
        """Write what is buffered, merge small chunks, and release the writer lock."""
        try:
            self.flush()
            self.compact()
        finally:
            self._mapped.clear()
            _unlock(self._lock)
            self._lock = None

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -------------------------------------------------------------- private
    def _write_chunk(self, digests: list[bytes], entries: list[ReferenceEntry]) -> None:
        if not digests:
            return
        number = self._next_number
        self._next_number += 1
        counts = np.array([len(entry.features.keypoints) for entry in entries], dtype=np.int64)
        ends = np.cumsum(counts)
        images = np.stack([ends - counts, ends,
                           [entry.features.width for entry in entries],
                           [entry.features.height for entry in entries]], axis=1).astype(np.int64)
        arrays = {
            "images": images,
            "boxes": np.array([entry.pin_box for entry in entries], dtype=np.float64).reshape(-1, 4),
            "keypoints": np.concatenate([np.asarray(e.features.keypoints, np.float32).reshape(-1, 4)
                                         for e in entries]),
            "descriptors": np.concatenate([np.asarray(e.features.descriptors, np.uint8).reshape(-1, DESCRIPTOR_DIMS)
                                           for e in entries]),
            "colour": np.stack([np.asarray(e.colour, np.uint8) for e in entries]),
        }
        stem = self.folder / f"chunk-{number:06d}"
        for part in _PARTS:
            _save_npy(Path(f"{stem}.{part}.npy"), np.ascontiguousarray(arrays[part]))
        keys = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
        _save_npy(Path(f"{stem}.keys.npy"), keys)
        chunk = _read_chunk(self.folder, number)
        if chunk is not None:
            self._register(chunk)

    def _load_chunks(self) -> None:
        names = os.listdir(self.folder)
        numbers = sorted(int(m.group(1)) for name in names if (m := _CHUNK.match(name)))
        for number in numbers:
            chunk = _read_chunk(self.folder, number)
            if chunk is not None:
                self._register(chunk)
        every = [int(m.group(1)) for name in names if (m := _CHUNK_FILE.match(name))]
        self._next_number = max(every, default=0) + 1
        if self.writable:  # parts of chunks whose keys never came (a killed writer): never readable, remove
            for name in names:
                m = _CHUNK_FILE.match(name)
                if m and int(m.group(1)) not in numbers:
                    (self.folder / name).unlink(missing_ok=True)

    def _register(self, chunk: "_Chunk") -> None:
        position = len(self._chunks)
        self._chunks.append(chunk)
        for row, key in enumerate(chunk.keys):
            self._where[key.tobytes()] = (position, row)

    def _arrays(self, position: int) -> dict[str, np.ndarray] | None:
        """The memory-mapped arrays of one chunk (a few chunks stay mapped); None if it cannot be read now."""
        arrays = self._mapped.get(position)
        if arrays is not None:
            self._mapped.move_to_end(position)
            return arrays
        stem = self.folder / f"chunk-{self._chunks[position].number:06d}"
        try:
            arrays = {part: np.load(f"{stem}.{part}.npy", mmap_mode="r", allow_pickle=False) for part in _MAPPED}
        except (OSError, ValueError, EOFError):  # removed or damaged since it was opened: a miss
            for key in self._chunks[position].keys:
                if self._where.get(key.tobytes(), (None,))[0] == position:
                    del self._where[key.tobytes()]
            return None
        self._mapped[position] = arrays
        while len(self._mapped) > _OPEN_CHUNKS:
            self._mapped.popitem(last=False)
        return arrays


class _Chunk:
    """A whole chunk's keys, image rows and boxes (read at open; the rest is mapped on demand)."""

    def __init__(self, number: int, keys: np.ndarray, images: np.ndarray, boxes: np.ndarray) -> None:
        self.number = number
        self.keys = keys
        self.images = images
        self.boxes = boxes


def _read_chunk(folder: Path, number: int) -> _Chunk | None:
    """A chunk whose files are all present, whole and consistent; ``None`` otherwise (it is then ignored)."""
    stem = folder / f"chunk-{number:06d}"
    try:
        keys = np.load(f"{stem}.keys.npy", allow_pickle=False)
        images = np.load(f"{stem}.images.npy", allow_pickle=False)
        boxes = np.load(f"{stem}.boxes.npy", allow_pickle=False)
        shapes = {part: _npy_shape(Path(f"{stem}.{part}.npy")) for part in _MAPPED}
    except (OSError, ValueError, EOFError):
        return None
    n = len(keys)
    expected = {"keypoints": (np.dtype(np.float32), 4), "descriptors": (np.dtype(np.uint8), DESCRIPTOR_DIMS)}
    if (keys.dtype != np.uint8 or keys.shape != (n, 32) or images.dtype != np.int64 or images.shape != (n, 4)
            or boxes.dtype != np.float64 or boxes.shape != (n, 4) or not np.isfinite(boxes).all()):
        return None
    if any(shapes[part] is None for part in _MAPPED):
        return None
    rows = shapes["keypoints"][1][0]
    for part, (dtype, width) in expected.items():
        if shapes[part][0] != dtype or shapes[part][1] != (rows, width):
            return None
    if shapes["colour"] != (np.dtype(np.uint8), (n, THUMBNAIL_SIDE, THUMBNAIL_SIDE, 4)):
        return None
    if n and (images[0, 0] != 0 or images[-1, 1] != rows or (images[1:, 0] != images[:-1, 1]).any()
              or (images[:, 1] < images[:, 0]).any() or (images[:, 2:] < 1).any()):
        return None
    return _Chunk(number, keys, images, boxes)


def _npy_shape(path: Path) -> tuple[np.dtype, tuple[int, ...]] | None:
    """dtype and shape from a ``.npy`` header, or ``None`` if the file is shorter than its header says."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version != (1, 0):  # np.save writes 1.0 for arrays like ours
            return None
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        if fortran or dtype.hasobject:
            return None
        need = handle.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if os.fstat(handle.fileno()).st_size < need:
            return None
    return dtype, tuple(int(v) for v in shape)


def _settings_folder(identity: dict[str, Any]) -> str:
    text = json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "identity": identity},
                      sort_keys=True, separators=(",", ":"))
    return "s-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_meta(path: Path, reset: bool) -> dict[str, Any] | None:
    """The folder's ``settings.json``; ``None`` when it is damaged and ``reset`` will discard it."""
    meta, problem = read_json_object(path)
    if meta is not None and meta.get("format") != FORMAT_NAME:
        meta, problem = None, "not a pinid local-feature cache's"
    if meta is None:
        if reset:
            return None
        raise InputError(f"local-feature cache {path.parent}: {META_FILE} is damaged ({problem}); pass "
                         "--reset-cache to discard the cache, or choose another --cache")
    return meta


def _try_lock(folder: Path) -> tuple[int | None, bool]:
    """(descriptor holding the writer lock, True), or (None, False) while another live process holds it."""
    if fcntl is None:
        return None, True
    try:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise InputError(f"cannot write local-feature cache {folder}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None, False
    except OSError:  # no locks on this file system: write without one
        pass
    return descriptor, True


def _unlock(descriptor: int | None) -> None:
    if descriptor is not None:
        os.close(descriptor)  # releases the flock


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_file_atomically(path, buffer.getvalue())


def _is_cache_file(name: str) -> bool:
    return name in (META_FILE, LOCK_FILE) or bool(_CHUNK_FILE.match(name)) or bool(_TEMPORARY.match(name))


def _clear(folder: Path) -> None:
    """Remove a settings folder's own files, and nothing else."""
    for entry in folder.iterdir():
        if entry.name != LOCK_FILE and _is_cache_file(entry.name) and (entry.is_file() or entry.is_symlink()):
            entry.unlink()


def _clear_temporaries(folder: Path) -> None:
    """Atomic writes a killed writer left half done (only the lock holder writes, so these are stale)."""
    for entry in folder.iterdir():
        if _TEMPORARY.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)


__all__ = ["CHUNK_SIZE", "FeatureCache", "feature_identity"]
