"""The index directory: build, atomic save, checked load, per-pin search.

Layout (see ``docs``/README)::

    INDEX_DIR/
      manifest.json     format version, pinid version, encoder identity, counts, build time
      vectors.faiss     FAISS IndexIDMap2 over an exact inner-product index; ids = image ids
      catalogue.sqlite  pins (pin_row, pin_id, name, metadata JSON), images (image_id -> pin_row, path, sha256)

Image ids are stable integers shared by FAISS and SQLite, so pins can be added,
replaced and removed later without re-encoding the rest. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np

from . import __version__
from ._atomic import replace_directory_atomically
from .catalogue import Catalogue, PinRecord
from .encoder import EncodeResult, Encoder, EncoderSpec
from .errors import (CatalogueError, EncoderMismatchError, ImageError, IndexFormatError, PinidError,
                     WeightsUnavailableError)
from .images import ImageSource

if TYPE_CHECKING:
    from .embedding_cache import EmbeddingCache

FORMAT_NAME = "pinid-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.faiss"
DATABASE_FILE = "catalogue.sqlite"

_SCHEMA = """
CREATE TABLE pins (
    pin_row  INTEGER PRIMARY KEY,
    pin_id   TEXT NOT NULL UNIQUE,
    name     TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE images (
    image_id INTEGER PRIMARY KEY,
    pin_row  INTEGER NOT NULL REFERENCES pins(pin_row) ON DELETE CASCADE,
    path     TEXT NOT NULL,
    sha256   TEXT NOT NULL
);
CREATE INDEX images_by_pin ON images(pin_row);
"""


@dataclass(frozen=True)
class Match:
    """One candidate pin for a photo. ``score`` is the cosine similarity of the best reference image."""

    rank: int
    pin_id: str
    name: str
    score: float
    metadata: dict[str, Any]
    reference_image: str

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "pin_id": self.pin_id, "name": self.name, "score": round(self.score, 6),
                "metadata": self.metadata, "reference_image": self.reference_image}


@dataclass(frozen=True)
class Identification:
    """The answer for one query: ranked matches, or the reason the photo could not be read."""

    query: str
    matches: list[Match]
    error: str | None = None


@dataclass(frozen=True)
class BuildReport:
    """What a build did, for the summary a user reads."""

    pins: int
    images: int
    skipped: list[tuple[str, str]]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _PinTable:
    """In-memory map from FAISS image ids to pins: search must not wait on SQLite."""

    image_ids: np.ndarray  # sorted int64
    image_pin_rows: np.ndarray  # pin_row per image id
    pins: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # pin_row -> (pin_id, name, metadata)
    image_paths: dict[int, str] = field(default_factory=dict)


class PinIndex:
    """A searchable catalogue of pins. Build with :meth:`build`, open with :meth:`load`."""

    def __init__(self, path: Path, manifest: dict[str, Any], vectors: Any, table: _PinTable,
                 encoder: Encoder | None) -> None:
        self.path = path
        self.manifest = manifest
        self.encoder = encoder
        self.build_report: BuildReport | None = None
        self._vectors = vectors
        self._searcher = _ExactSearcher(vectors)
        self._table = table

    # ----------------------------------------------------------------- build
    @classmethod
    def build(cls, catalogue: Catalogue, out_dir: str | os.PathLike, encoder: Encoder, *,
              batch_size: int = 32, workers: int = 2, cache: EmbeddingCache | None = None,
              on_progress: Callable[[int], None] | None = None) -> "PinIndex":
        """Encode every reference image and write a new index to ``out_dir`` atomically.

        Unreadable images are skipped and listed in ``build_report``; a pin with no
        readable image is left out. If anything fails, the previous index at
        ``out_dir`` (if any) is untouched. With a ``cache`` (see
        ``EmbeddingCache.open``), images are keyed by content: a rebuild encodes only
        new or changed files, and an interrupted build resumes where it stopped.
        """
        started = time.perf_counter()
        owners: list[PinRecord] = []
        paths: list[Path] = []
        for pin in catalogue.pins:
            owners.extend([pin] * len(pin.images))
            paths.extend(pin.images)
        if cache is None:
            encoded = encoder.encode_images(paths, batch_size=batch_size, workers=workers, on_progress=on_progress)
        else:
            encoded = _encode_with_cache(paths, encoder, cache, batch_size, workers, on_progress)
        skipped = list(catalogue.skipped) + [(str(paths[i]), reason.split(": ", 1)[-1])
                                             for i, reason in encoded.failures]
        rows = _rows_by_pin(owners, paths, encoded.ok)
        for pin in catalogue.pins:
            if pin.pin_id not in rows:
                skipped.append((pin.pin_id, "pin left out: none of its images could be read"))
        if not rows:
            raise CatalogueError(f"catalogue {catalogue.source}: none of its {len(paths)} images could be read")
        manifest = _new_manifest(encoder, catalogue, pins=len(rows), images=len(encoded.ok))
        target = Path(out_dir).expanduser()

        def write(folder: Path) -> None:
            _write_database(folder / DATABASE_FILE, rows)
            _write_vectors(folder / VECTORS_FILE, encoded.vectors)
            (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

        replace_directory_atomically(target, write, is_replaceable=_looks_like_index)
        index = cls.load(target, encoder=encoder)
        index.build_report = BuildReport(len(rows), len(encoded.ok), skipped, time.perf_counter() - started)
        return index

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str | os.PathLike, encoder: Encoder | Literal["manifest"] | None = "manifest", *,
             device: str = "auto", offline: bool | None = None) -> "PinIndex":
        """Open an index directory and check it is whole and matches ``encoder``.

        ``encoder="manifest"`` loads the encoder the index was built with; pass an
        ``Encoder`` to reuse a loaded one (it must be the same model and weights),
        or ``None`` to only inspect or search by vector.
        """
        folder = Path(path).expanduser()
        manifest = read_manifest(folder)
        vectors = _read_vectors(folder / VECTORS_FILE)
        table = _read_table(folder / DATABASE_FILE)
        expected_images = manifest["counts"]["images"]
        if vectors.ntotal != expected_images or len(table.image_ids) != expected_images:
            raise IndexFormatError(
                f"index {folder} is inconsistent: manifest lists {expected_images} images, "
                f"{VECTORS_FILE} has {vectors.ntotal}, {DATABASE_FILE} has {len(table.image_ids)}; rebuild it")
        if vectors.d != manifest["encoder"]["embedding_dim"]:
            raise IndexFormatError(f"index {folder}: {VECTORS_FILE} has dimension {vectors.d}, "
                                   f"manifest says {manifest['encoder']['embedding_dim']}; rebuild it")
        if encoder == "manifest":
            recorded = manifest["encoder"]
            spec = EncoderSpec(recorded["model"], recorded.get("pretrained"))
            try:
                encoder = Encoder.load(spec, device=device, offline=offline)
            except WeightsUnavailableError as exc:
                raise WeightsUnavailableError(
                    f"index {folder} needs encoder {spec.describe()}: {exc} (if the weights moved, "
                    "pass --model/--pretrained pointing at the same weights)") from exc
        if encoder is not None:
            check_encoder(folder, manifest["encoder"], encoder)
        return cls(folder, manifest, vectors, table, encoder)

    # ---------------------------------------------------------------- search
    def __len__(self) -> int:
        return len(self._table.pins)

    def identify(self, image: ImageSource, k: int = 5) -> list[Match]:
        """Rank the ``k`` most likely pins for one photo; raises ``ImageError`` if it cannot be read."""
        result = self.identify_many([image], k=k)[0]
        if result.error is not None:
            raise ImageError(result.error)
        return result.matches

    def identify_many(self, images: Sequence[ImageSource], k: int = 5, *, batch_size: int = 32,
                      on_progress: Callable[[int], None] | None = None) -> list[Identification]:
        """Identify many photos in batches; an unreadable photo gets an ``error``, the rest still answer."""
        encoder = self._require_encoder()
        encoded = encoder.encode_images(images, batch_size=batch_size, on_progress=on_progress)
        ranked = self.search(encoded.vectors, k=k)
        by_position = dict(zip(encoded.ok, ranked))
        errors = dict(encoded.failures)
        return [Identification(_query_name(image), by_position.get(i, []), errors.get(i))
                for i, image in enumerate(images)]

    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Top-``k`` pins per query vector, each pin scored by its best reference image."""
        if k < 1:
            raise PinidError("k must be at least 1")
        queries = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self._vectors.d)
        if len(queries) == 0:
            return []
        total = self._vectors.ntotal
        depth = min(total, max(4 * k, k + 32))
        while True:
            scores, ids = self._searcher.search(queries, depth)
            ranked = [self._aggregate(score_row, id_row, k) for score_row, id_row in zip(scores, ids)]
            if depth >= total or all(len(r) >= min(k, len(self._table.pins)) for r in ranked):
                return ranked
            depth = min(total, depth * 4)  # many images per pin: look deeper for k distinct pins

    def _aggregate(self, scores: np.ndarray, ids: np.ndarray, k: int) -> list[Match]:
        table = self._table
        valid = ids >= 0
        scores, ids = scores[valid], ids[valid]
        pin_rows = table.image_pin_rows[np.searchsorted(table.image_ids, ids)]
        matches: list[Match] = []
        seen: set[int] = set()
        for score, image_id, pin_row in zip(scores, ids, pin_rows):  # already sorted by score
            if pin_row in seen:
                continue
            seen.add(int(pin_row))
            pin_id, name, metadata = table.pins[int(pin_row)]
            matches.append(Match(len(matches) + 1, pin_id, name, float(score), json.loads(metadata),
                                 table.image_paths[int(image_id)]))
            if len(matches) == k:
                break
        return matches

    def reference_images(self, pin_id: str) -> list[str]:
        """Paths of a pin's reference images, as recorded at build time."""
        table = self._table
        rows = [row for row, (known_id, _, _) in table.pins.items() if known_id == pin_id]
        if not rows:
            return []
        image_ids = table.image_ids[table.image_pin_rows == rows[0]]
        return [table.image_paths[int(image_id)] for image_id in image_ids]

    def _require_encoder(self) -> Encoder:
        if self.encoder is None:
            raise PinidError("this index was loaded without an encoder; load it with encoder='manifest'")
        return self.encoder

    def info(self) -> dict[str, Any]:
        """A summary of the manifest, for people and for `pinid info --json`."""
        return {"path": str(self.path), **self.manifest}


class _ExactSearcher:
    """Exact inner-product search over FAISS's own flat storage (zero-copy), run by torch.

    FAISS answers a single query on a flat index with a one-threaded scan
    (52 ms for 100k x 512 on the 2-core reference machine, under load); a
    matrix-vector product over the same memory uses every core and runs at
    memory bandwidth (about 8 ms). It runs in torch rather than NumPy so that
    it shares one thread pool with the encoder: NumPy's OpenBLAS threads keep
    spinning after a call and slowed the next forward pass by half (identify
    p50 140 ms -> 93 ms; scripts/bench_core.py). Results equal FAISS's.
    """

    _QUERY_BLOCK = 64  # bounds the (queries x images) score matrix

    def __init__(self, index: Any) -> None:
        import faiss
        import torch

        flat = faiss.downcast_index(index.index)
        if not isinstance(flat, faiss.IndexFlat):
            raise IndexFormatError(f"unsupported FAISS index type {type(flat).__name__}")
        self._index = index  # keeps the memory behind the views alive
        matrix = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
        self._matrix = torch.from_numpy(matrix)
        self._ids = faiss.vector_to_array(index.id_map).astype(np.int64)

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        depth = min(depth, len(self._ids))
        scores_out = np.empty((len(queries), depth), dtype=np.float32)
        ids_out = np.empty((len(queries), depth), dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, len(queries), self._QUERY_BLOCK):
                block = torch.from_numpy(np.ascontiguousarray(queries[start:start + self._QUERY_BLOCK]))
                values, positions = torch.topk(block @ self._matrix.T, depth, dim=1)  # sorted, best first
                scores_out[start:start + len(block)] = values.numpy()
                ids_out[start:start + len(block)] = self._ids[positions.numpy()]
        return scores_out, ids_out


# --------------------------------------------------------------------- checks
def read_manifest(folder: Path) -> dict[str, Any]:
    """Read and validate ``manifest.json``; every failure is an ``IndexFormatError``."""
    if not folder.exists():
        raise IndexFormatError(f"index {folder} does not exist; build it with `pinid build-index`")
    if not folder.is_dir():
        raise IndexFormatError(f"index {folder} is not a directory")
    manifest_path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{folder} is not a pinid index ({MANIFEST_FILE} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"index {folder}: {MANIFEST_FILE} is damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{folder}: {MANIFEST_FILE} is not a pinid index manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"index {folder} has format version {version}; this pinid ({__version__}) "
                               f"reads version {FORMAT_VERSION}: rebuild the index")
    try:
        int(manifest["counts"]["images"]), int(manifest["encoder"]["embedding_dim"]), manifest["encoder"]["model"]
    except (KeyError, TypeError, ValueError):
        raise IndexFormatError(f"index {folder}: {MANIFEST_FILE} lacks counts or encoder fields") from None
    return manifest


def check_encoder(folder: Path, recorded: dict[str, Any], encoder: Encoder) -> None:
    """Refuse to query an index with another model, other weights or other preprocessing."""
    current = encoder.identity()
    built_with = EncoderSpec(recorded["model"], recorded.get("pretrained")).describe()
    same_weights = (recorded.get("weights_sha256") == current["weights_sha256"]
                    if recorded.get("weights_sha256") else built_with == encoder.spec.describe())
    problems = []
    if not same_weights:
        problems.append("different weights")
    if recorded.get("embedding_dim") != current["embedding_dim"]:
        problems.append(f"dimension {current['embedding_dim']} vs {recorded.get('embedding_dim')}")
    if recorded.get("preprocess") != current["preprocess"]:
        problems.append("different preprocessing")
    if problems:
        raise EncoderMismatchError(
            f"index {folder} was built with encoder {built_with} but is queried with "
            f"{encoder.spec.describe()} ({', '.join(problems)}); use the same encoder or rebuild the index")


def _looks_like_index(folder: Path) -> bool:
    return (folder / MANIFEST_FILE).is_file() or not any(folder.iterdir())


# ---------------------------------------------------------------- storage I/O
def _encode_with_cache(paths: list[Path], encoder: Encoder, cache: EmbeddingCache, batch_size: int, workers: int,
                       on_progress: Callable[[int], None] | None) -> EncodeResult:
    """The same result as ``encoder.encode_images(paths)``, taking known contents from ``cache``."""
    from .dedup import EmbedOptions, embed_listings
    from .listings import Listing

    reported = 0

    def advance_to(count: int) -> None:
        nonlocal reported
        if on_progress is not None and count > reported:
            on_progress(count - reported)
            reported = count

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "encoding":  # one bar over all images: the cached ones count as done
            advance_to(len(paths) - total + done)

    listings = [Listing(str(position), path) for position, path in enumerate(paths)]
    embedded = embed_listings(listings, encoder, cache, EmbedOptions(batch_size=batch_size, workers=workers),
                              progress)
    advance_to(len(paths))
    ok = [position for position in range(len(paths)) if embedded.content_of[position] >= 0]
    vectors = embedded.vectors[embedded.content_of[ok]].astype(np.float32, copy=False)
    failures = sorted((position, f"{paths[position]}: {reason}") for position, reason in embedded.failures.items())
    return EncodeResult(np.ascontiguousarray(vectors), ok, failures)


def _rows_by_pin(owners: list[PinRecord], paths: list[Path], ok: list[int]) -> dict[str, tuple[PinRecord, list]]:
    rows: dict[str, tuple[PinRecord, list]] = {}
    for vector_row, position in enumerate(ok):
        pin = owners[position]
        rows.setdefault(pin.pin_id, (pin, []))[1].append((vector_row, paths[position]))
    return rows


def _new_manifest(encoder: Encoder, catalogue: Catalogue, *, pins: int, images: int) -> dict[str, Any]:
    import faiss

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "pinid_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": encoder.identity(),
        "counts": {"pins": pins, "images": images},
        "vectors": {"file": VECTORS_FILE, "faiss_index": "IDMap2,Flat", "metric": "inner_product",
                    "faiss_version": faiss.__version__},
        "catalogue": {"source": str(catalogue.source.resolve())},
        "next_image_id": images,
    }


def _write_database(path: Path, rows: dict[str, tuple[PinRecord, list]]) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.executescript(_SCHEMA)
        for pin_row, (pin, images) in enumerate(rows.values()):
            connection.execute("INSERT INTO pins VALUES (?, ?, ?, ?)",
                               (pin_row, pin.pin_id, pin.name, json.dumps(pin.metadata, ensure_ascii=False,
                                                                          default=str)))
            connection.executemany("INSERT INTO images VALUES (?, ?, ?, ?)",
                                   [(vector_row, pin_row, str(image_path.resolve()), _file_sha256(image_path))
                                    for vector_row, image_path in images])
        connection.commit()
    finally:
        connection.close()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_vectors(path: Path, vectors: np.ndarray) -> None:
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    faiss.write_index(index, str(path))


def _read_vectors(path: Path) -> Any:
    import faiss

    if not path.is_file():
        raise IndexFormatError(f"index {path.parent} is damaged: {path.name} is missing; rebuild it")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFormatError(f"index {path.parent} is damaged: {path.name} cannot be read "
                               f"({str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}); rebuild it") from None


def _read_table(path: Path) -> _PinTable:
    if not path.is_file():
        raise IndexFormatError(f"index {path.parent} is damaged: {path.name} is missing; rebuild it")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            pins = {row[0]: (row[1], row[2], row[3])
                    for row in connection.execute("SELECT pin_row, pin_id, name, metadata FROM pins")}
            images = connection.execute("SELECT image_id, pin_row, path FROM images ORDER BY image_id").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(f"index {path.parent} is damaged: {path.name} cannot be read ({exc}); "
                               "rebuild it") from None
    image_ids = np.array([row[0] for row in images], dtype=np.int64)
    image_pin_rows = np.array([row[1] for row in images], dtype=np.int64)
    return _PinTable(image_ids, image_pin_rows, pins, {row[0]: row[2] for row in images})


def _query_name(image: ImageSource) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
