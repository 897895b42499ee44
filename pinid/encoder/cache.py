"""Embeddings and photo hashes on disk, keyed by file content, so builds and dedup runs are incremental.

A marketplace re-checks its listings every day; only new or changed files
should meet the model. Entries are keyed by the sha256 of the file's bytes
(renames and moves cost nothing; an edited file is a new entry) and written
in chunks as encoding goes, each chunk atomically, so an interrupted run loses
at most the chunk in flight. Layout (no pickle; vectors are memory-mapped)::

    CACHE_DIR/
      cache.json                 format, encoder identity, photo-hash version
      chunk-000001.vectors.npy   (n, d) float32, L2-normalised
      chunk-000001.hashes.npy    (n, WINDOWS) uint64 photo hashes (pinid.phash: crop windows, ring hashes)
      chunk-000001.keys.npy      (n, 32) uint8 sha256 digests; written last, so it marks the chunk whole
      local-features/            the local-feature cache (pinid.local.cache), when the same --cache is used

A cache made by another encoder (or another photo-hash version) is refused
with an ``EncoderMismatchError`` naming both, never silently mixed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from PIL import Image

from .._atomic import write_file_atomically
from ..errors import EncoderMismatchError, ImageError, InputError
from ..images import load_image
from ..phash import HASH_MIN_SIDE, PHASH_VERSION, WINDOWS, window_hashes
from ..results import Progress
from ..tables import read_json_object

FORMAT_NAME = "pinid-embedding-cache"
FORMAT_VERSION = 1
META_FILE = "cache.json"
_CHUNK = re.compile(r"^chunk-(\d{6})\.keys\.npy$")
_CHUNK_FILE = re.compile(r"^chunk-\d{6}\.(keys|vectors|hashes)\.npy$")
_TEMPORARY = re.compile(r"^\.(cache\.json|chunk-\d{6}\.(keys|vectors|hashes)\.npy)\..+\.tmp$")  # write_file_atomically
FEATURE_CACHE_DIR = "local-features"  # pinid.local.cache keeps local features here, beside the embeddings
_COMPACT_ABOVE = 64  # merge small chunks once there are this many (daily runs add one or two each)


class EmbeddingCache:
    """Content-hash -> (vector, photo hashes) store for one encoder. Open with :meth:`open`."""

    def __init__(self, folder: Path, identity: dict[str, Any]) -> None:
        self.folder = folder
        self.identity = identity
        self._chunks: list[tuple[int, np.ndarray, np.ndarray]] = []  # (number, vectors mmap, hashes)
        self._where: dict[bytes, tuple[int, int]] = {}  # digest -> (chunk position, row)
        self._next_number = 1
        self._load_chunks()

    @classmethod
    def open(cls, folder: str | os.PathLike, encoder_identity: dict[str, Any], *,
             reset: bool = False) -> "EmbeddingCache":
        """Open or create the cache at ``folder`` for this encoder; ``reset`` discards what is there.

        ``reset`` also recovers a cache whose ``cache.json`` is damaged, but only
        in a folder that is recognisably a pinid cache (nothing but its own
        files), so a mistyped ``--cache`` never empties a folder of photos.
        """
        path = Path(folder).expanduser()
        identity = {"encoder": encoder_identity, "phash_version": PHASH_VERSION, "windows": WINDOWS}
        if path.exists() and not path.is_dir():
            raise InputError(f"cache {path} exists and is not a directory")
        meta_path = path / META_FILE
        if path.is_dir() and any(entry.name != FEATURE_CACHE_DIR for entry in path.iterdir()):
            if not meta_path.is_file():
                raise InputError(f"cache {path} is not empty and is not a pinid embedding cache; "
                                 "choose another --cache")
            meta = _read_meta(meta_path, reset)
            if meta is None:  # damaged, and reset asked for
                if not _recognisably_cache(path):
                    raise InputError(f"cache {path}: {META_FILE} is damaged and the folder is not recognisably a "
                                     f"pinid embedding cache ({META_FILE} and chunk-*.npy files only), so "
                                     "--reset-cache leaves it alone; delete it yourself or choose another --cache")
                _clear(path)
            elif reset:
                _clear(path)
            elif meta.get("format_version") != FORMAT_VERSION:
                raise InputError(f"cache {path} has format version {meta.get('format_version')}, this pinid "
                                 f"reads {FORMAT_VERSION}; pass --reset-cache to rebuild it")
            elif meta.get("identity") != identity:
                raise EncoderMismatchError(_mismatch_message(path, meta.get("identity") or {}, identity))
        path.mkdir(parents=True, exist_ok=True)
        if not meta_path.is_file():
            write_file_atomically(meta_path, (json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                                                      "identity": identity}, indent=2) + "\n").encode())
        return cls(path, identity)

    # ----------------------------------------------------------------- read
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._where

    def get_many(self, digests: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors ``(n, d)`` and photo hashes ``(n, WINDOWS)`` for cached digests, in order."""
        dim = self._chunks[0][1].shape[1] if self._chunks else 0
        vectors = np.empty((len(digests), dim), dtype=np.float32)
        hashes = np.empty((len(digests), WINDOWS), dtype=np.uint64)
        by_chunk: dict[int, tuple[list[int], list[int]]] = {}
        for out_row, digest in enumerate(digests):
            chunk, row = self._where[digest]
            outs, rows = by_chunk.setdefault(chunk, ([], []))
            outs.append(out_row)
            rows.append(row)
        for chunk, (outs, rows) in by_chunk.items():  # one fancy-index per chunk, not per row
            _, chunk_vectors, chunk_hashes = self._chunks[chunk]
            vectors[outs] = chunk_vectors[rows]
            hashes[outs] = chunk_hashes[rows]
        return vectors, hashes

    # ---------------------------------------------------------------- write
    def add_chunk(self, digests: list[bytes], vectors: np.ndarray, hashes: np.ndarray) -> None:
        """Write one chunk atomically (keys last) and make it readable at once."""
        if not digests:
            return
        number = self._next_number
        self._next_number += 1
        stem = self.folder / f"chunk-{number:06d}"
        keys = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
        _save_npy(Path(f"{stem}.vectors.npy"), np.ascontiguousarray(vectors, dtype=np.float32))
        _save_npy(Path(f"{stem}.hashes.npy"), np.ascontiguousarray(hashes, dtype=np.uint64))
        _save_npy(Path(f"{stem}.keys.npy"), keys)
        self._register(number, keys, np.load(f"{stem}.vectors.npy", mmap_mode="r", allow_pickle=False),
                       np.load(f"{stem}.hashes.npy", allow_pickle=False))

    def compact(self) -> bool:
        """Merge all chunks into one when there are many; True if it did.

        The merged chunk is written whole before the old ones are removed; a
        crash in between leaves duplicate entries, which are harmless.
        """
        if len(self._chunks) <= _COMPACT_ABOVE:
            return False
        digests = list(self._where)
        vectors, hashes = self.get_many(digests)
        old = [number for number, _, _ in self._chunks]
        self._chunks, self._where = [], {}
        self.add_chunk(digests, vectors, hashes)
        for number in old:
            for part in ("keys", "vectors", "hashes"):  # keys first: the chunk stops counting at once
                (self.folder / f"chunk-{number:06d}.{part}.npy").unlink(missing_ok=True)
        return True

    # -------------------------------------------------------------- private
    def _load_chunks(self) -> None:
        numbers = sorted(int(m.group(1)) for name in os.listdir(self.folder) if (m := _CHUNK.match(name)))
        for number in numbers:
            stem = self.folder / f"chunk-{number:06d}"
            try:
                keys = np.load(f"{stem}.keys.npy", allow_pickle=False)
                vectors = np.load(f"{stem}.vectors.npy", mmap_mode="r", allow_pickle=False)
                hashes = np.load(f"{stem}.hashes.npy", allow_pickle=False)
            except (OSError, ValueError):
                continue  # a damaged chunk only costs re-encoding its files
            if (keys.ndim != 2 or keys.shape[1] != 32 or len(vectors) != len(keys) or len(hashes) != len(keys)
                    or hashes.shape[1:] != (WINDOWS,)
                    or vectors.shape[1] != self.identity["encoder"].get("embedding_dim", vectors.shape[1])):
                continue
            self._register(number, keys, vectors, hashes)
        self._next_number = (max(numbers) + 1) if numbers else 1

    def _register(self, number: int, keys: np.ndarray, vectors: np.ndarray, hashes: np.ndarray) -> None:
        position = len(self._chunks)
        self._chunks.append((number, vectors, hashes))
        for row, key in enumerate(keys):
            self._where[key.tobytes()] = (position, row)


def _read_meta(path: Path, reset: bool) -> dict[str, Any] | None:
    """The cache's metadata; ``None`` when it is damaged and ``reset`` will discard it.

    Damaged (unreadable, not JSON, not an object) is an ``InputError`` naming
    the folder and ``--reset-cache``; a JSON object of another format is not
    ours and is refused even with ``reset``. Another format version is returned
    so that the caller can refuse it or, with ``reset``, discard it.
    """
    meta, problem = read_json_object(path)
    if meta is None:
        if reset:
            return None
        raise InputError(f"cache {path.parent}: {META_FILE} is damaged ({problem}); pass --reset-cache to "
                         "discard the cache, or choose another --cache")
    if meta.get("format") != FORMAT_NAME:
        raise InputError(f"{path.parent} is not a pinid embedding cache; choose another --cache")
    return meta


def _mismatch_message(path: Path, cached: dict[str, Any], wanted: dict[str, Any]) -> str:
    def describe(identity: dict[str, Any]) -> str:
        encoder = identity.get("encoder") or {}
        weights = str(encoder.get("weights_sha256") or "?")[:12]
        return (f"{encoder.get('model')} (weights {weights}, dim {encoder.get('embedding_dim')}, "
                f"photo hash v{identity.get('phash_version')})")

    return (f"cache {path} was made by {describe(cached)}, not by {describe(wanted)}; "
            "pass --reset-cache to discard it or --cache DIR to use another folder")


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_file_atomically(path, buffer.getvalue())


def _is_cache_file(name: str) -> bool:
    """``cache.json``, a chunk file, or an atomic write's temporary file of either."""
    return name == META_FILE or bool(_CHUNK_FILE.match(name)) or bool(_TEMPORARY.match(name))


def _recognisably_cache(folder: Path) -> bool:
    """Plain files with the cache's own names only, and chunk files among them or our format marker
    in ``cache.json`` (a truncated one still starts with it): a lone foreign ``cache.json`` is not ours.
    """
    entries = [entry for entry in folder.iterdir() if entry.name != FEATURE_CACHE_DIR]
    if not all(entry.is_file() and not entry.is_symlink() and _is_cache_file(entry.name) for entry in entries):
        return False
    if any(_CHUNK_FILE.match(entry.name) for entry in entries):
        return True
    try:
        head = (folder / META_FILE).read_bytes()[:4096]
    except OSError:
        return False
    return FORMAT_NAME.encode() in head or not head.strip()  # an empty one holds nothing to lose


def _clear(folder: Path) -> None:
    """Remove a cache's own files, and nothing else (the caller checked the folder is a cache)."""
    for entry in folder.iterdir():
        if _is_cache_file(entry.name) and (entry.is_file() or entry.is_symlink()):
            entry.unlink()


# ----------------------------------------------------------------- embedding


class ImageEncoder(Protocol):
    """What embedding needs from an encoder (``pinid.Encoder`` fits; tests use stand-ins)."""

    def encode_images(self, sources: Sequence[Any], *, batch_size: int = 32, workers: int = 2,
                      on_progress: Callable[[int], None] | None = None) -> Any: ...

    def identity(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EmbedOptions:
    batch_size: int = 32
    workers: int = 2
    chunk_size: int = 256  # files per atomic cache chunk: what an interruption can lose


@dataclass
class Embedded:
    """Vectors and photo hashes per distinct content, and which file has which content."""

    content_of: np.ndarray  # per file: row in vectors/hashes, or -1 if unreadable
    digests: list[bytes]  # per content row
    vectors: np.ndarray  # (contents, d) float32
    hashes: np.ndarray  # (contents, WINDOWS) uint64
    failures: dict[int, str]  # file position -> reason
    encoded: int  # contents encoded in this run (the rest came from the cache)
    cached: int


# ----------------------------------------------------------------- embedding
def embed_files(paths: Sequence[Path], encoder: ImageEncoder, cache: EmbeddingCache,
                options: EmbedOptions = EmbedOptions(), on_progress: Progress | None = None,
                digests: Sequence[bytes | str] | None = None) -> Embedded:
    """Vectors and photo hashes for every readable file, encoding only what the cache lacks.

    Each chunk of new contents is written to the cache as soon as it is
    encoded, so an interrupted run resumes where it stopped. Unreadable files
    are reported in ``failures``, never raised. ``digests``: each path's
    sha256 (or why it cannot be read) when already known, e.g. hashed on a
    Ray cluster (``pinid.cluster``), so the files are not read again here.
    """
    image_size = int(getattr(encoder, "image_size", 224))
    failures: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="pinid-embed") as pool:
        digests = list(digests) if digests is not None else _hash_all(pool, paths, on_progress)
        if len(digests) != len(paths):
            raise ValueError(f"{len(digests)} digests for {len(paths)} paths")
        first_with: dict[bytes, int] = {}
        for position, digest in enumerate(digests):
            if isinstance(digest, str):
                failures[position] = digest
            elif digest not in first_with:
                first_with[digest] = position
        missing = [digest for digest in first_with if digest not in cache]
        broken: dict[bytes, str] = {}
        for start in range(0, len(missing), options.chunk_size):
            chunk = missing[start:start + options.chunk_size]
            prepared = list(pool.map(lambda d: prepare(paths[first_with[d]], d, image_size), chunk))
            ready = [(digest, item) for digest, item in zip(chunk, prepared) if not isinstance(item, str)]
            broken.update((digest, item) for digest, item in zip(chunk, prepared) if isinstance(item, str))
            if ready:
                result = encoder.encode_images([image for _, (image, _) in ready], batch_size=options.batch_size,
                                               workers=options.workers)
                for position, reason in result.failures:
                    broken[ready[position][0]] = reason
                cache.add_chunk([ready[i][0] for i in result.ok], result.vectors,
                                np.stack([ready[i][1][1] for i in result.ok]) if result.ok
                                else np.empty((0, WINDOWS), np.uint64))
            if on_progress is not None:
                on_progress("encoding", start + len(chunk), len(missing))
    cache.compact()
    rows: dict[bytes, int] = {}
    content_of = np.full(len(paths), -1, dtype=np.int64)
    for position, digest in enumerate(digests):
        if isinstance(digest, str):
            continue
        if digest in broken or digest not in cache:
            failures[position] = broken.get(digest, "could not be encoded")
            continue
        content_of[position] = rows.setdefault(digest, len(rows))
    ordered = list(rows)
    vectors, hashes = cache.get_many(ordered)
    encoded = sum(1 for digest in missing if digest in rows)
    return Embedded(content_of, ordered, vectors, hashes, failures, encoded, len(rows) - encoded)


def _hash_all(pool: ThreadPoolExecutor, paths: Sequence[Path], on_progress: Progress | None) -> list[bytes | str]:
    digests: list[bytes | str] = []
    for done, digest in enumerate(pool.map(sha256_or_reason, paths), 1):
        digests.append(digest)
        if on_progress is not None and (done % 256 == 0 or done == len(paths)):
            on_progress("hashing", done, len(paths))
    return digests


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (the content key of caches and index rows)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_or_reason(path: Path) -> bytes | str:
    """The raw sha256 digest of a file, or a one-line reason why it cannot be read."""
    try:
        return bytes.fromhex(file_sha256(path))
    except FileNotFoundError:
        return "file not found"
    except IsADirectoryError:
        return "is a directory, not an image"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def prepare(path: Path, expected: bytes, image_size: int) -> tuple[Image.Image, np.ndarray] | str:
    """Decode once for both the photo hash and the encoder; a one-line reason if it cannot be."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if hashlib.sha256(data).digest() != expected:
        return "file changed while dedup was running; run again"
    try:
        image = load_image(data, min_side=max(image_size, 64))
        # ring hashes want a larger decode than a small model's input (pinid.phash.HASH_MIN_SIDE)
        larger = load_image(data, min_side=HASH_MIN_SIDE) if min(image.size) < HASH_MIN_SIDE else None
    except ImageError as exc:
        return exc.reason
    return image, window_hashes(image, ring_image=larger)


