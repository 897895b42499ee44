"""The index directory: build, atomic save, checked load, per-pin search.

Layout (see ``docs``/README)::

    INDEX_DIR/
      manifest.json     format version, pinid version, encoder identity (or null), counts, build time,
                        local-feature settings and the confidence calibration
      vectors.faiss     FAISS IndexIDMap2 over an exact inner-product index; ids = image ids (CLIP only)
      catalogue.sqlite  pins (pin_row, pin_id, name, metadata JSON), images (image_id -> pin_row, path, sha256)
      local/            reference keypoints, descriptors, pin boxes, colour thumbnails (pinid.local_features)
      local_vocabulary.faiss  all reference descriptors, for the candidate vote (pinid.local_votes)

An index built with ``encoder=None`` (``pinid build-index --encoder local``)
has no ``vectors.faiss`` and needs no model weights at all.

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
from PIL import Image

from . import __version__
from ._atomic import replace_directory_atomically, write_file_atomically
from .catalogue import Catalogue, PinRecord
from .encoder import EncodeResult, Encoder, EncoderSpec
from .errors import (CatalogueError, EncoderMismatchError, ImageError, IndexFormatError, PinidError,
                     WeightsUnavailableError)
from .confidence import Calibration, default_calibration
from .images import ImageSource, load_image
from .local_features import LOCAL_DIR, LocalStore, ReferenceEntry, reference_entry, write_local_store
from .local_votes import VOCABULARY_FILE, build_vocabulary, read_vocabulary, write_vocabulary
from .recognise import DEFAULT_CANDIDATES, Candidate, Found, Recogniser

if TYPE_CHECKING:
    from .embedding_cache import EmbeddingCache

FORMAT_NAME = "pinid-index"
FORMAT_VERSION = 2
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
    """One candidate pin for a photo.

    ``score`` orders the list: in :meth:`PinIndex.search` the cosine similarity
    of the pin's best reference image; in verified identification the
    calibrated probability that this candidate is the pin in the photo. The
    verification fields are ``None`` where no verification ran.
    """

    rank: int
    pin_id: str
    name: str
    score: float
    metadata: dict[str, Any]
    reference_image: str
    inliers: int | None = None  # geometrically consistent matches at distinct places
    colour_distance: float | None = None  # Lab distance of the aligned enamel regions
    polygon: list[list[float]] | None = None  # the pin's outline in the photo, when aligned

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"rank": self.rank, "pin_id": self.pin_id, "name": self.name,
                                  "score": round(self.score, 6), "metadata": self.metadata,
                                  "reference_image": self.reference_image}
        if self.inliers is not None:
            result["inliers"] = self.inliers
            result["colour_distance"] = (None if self.colour_distance is None or np.isnan(self.colour_distance)
                                         else round(self.colour_distance, 2))
            result["polygon"] = self.polygon
        return result


@dataclass(frozen=True)
class Identification:
    """The answer for one query: ranked matches, or the reason the photo could not be read.

    ``confidence`` is the calibrated probability that the first match is right
    (``None`` when only CLIP similarity was used); ``unknown`` says that it is
    under the index's threshold: the pin is probably not in the catalogue, and
    ``matches`` are only the nearest candidates.
    """

    query: str
    matches: list[Match]
    error: str | None = None
    confidence: float | None = None
    unknown: bool = False


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
                 encoder: Encoder | None, recogniser: Recogniser) -> None:
        self.path = path
        self.manifest = manifest
        self.encoder = encoder
        self.build_report: BuildReport | None = None
        self._vectors = vectors
        self._searcher = _ExactSearcher(vectors) if vectors is not None else None
        self._table = table
        self._recogniser = recogniser

    # ----------------------------------------------------------------- build
    @classmethod
    def build(cls, catalogue: Catalogue, out_dir: str | os.PathLike, encoder: Encoder | None, *,
              batch_size: int = 32, workers: int = 2, cache: EmbeddingCache | None = None,
              on_progress: Callable[[int], None] | None = None,
              on_features: Callable[[int], None] | None = None) -> "PinIndex":
        """Encode every reference image, extract its local features and write a new index atomically.

        ``encoder=None`` builds a local-features-only index that needs no model.
        Unreadable images are skipped and listed in ``build_report``; a pin with
        no readable image is left out. If anything fails, the previous index at
        ``out_dir`` (if any) is untouched. With a ``cache`` (see
        ``EmbeddingCache.open``), images are keyed by content: a rebuild encodes
        only new or changed files, and an interrupted build resumes.
        ``on_progress`` counts encoded images, ``on_features`` images whose
        local features are done.
        """
        started = time.perf_counter()
        owners: list[PinRecord] = []
        paths: list[Path] = []
        for pin in catalogue.pins:
            owners.extend([pin] * len(pin.images))
            paths.extend(pin.images)
        skipped = list(catalogue.skipped)
        if encoder is None:
            encoded = None
            ok = list(range(len(paths)))
        else:
            if cache is None:
                encoded = encoder.encode_images(paths, batch_size=batch_size, workers=workers,
                                                on_progress=on_progress)
            else:
                encoded = _encode_with_cache(paths, encoder, cache, batch_size, workers, on_progress)
            skipped += [(str(paths[i]), reason.split(": ", 1)[-1]) for i, reason in encoded.failures]
            ok = list(encoded.ok)
        entries, failures = _reference_entries([paths[i] for i in ok], workers, on_features)
        skipped += [(str(paths[ok[i]]), reason) for i, reason in failures]
        kept = [i for i, entry in enumerate(entries) if entry is not None]
        vectors = None if encoded is None else np.ascontiguousarray(encoded.vectors[kept])
        ok = [ok[i] for i in kept]
        rows = _rows_by_pin(owners, paths, ok)
        for pin in catalogue.pins:
            if pin.pin_id not in rows:
                skipped.append((pin.pin_id, "pin left out: none of its images could be read"))
        if not rows:
            raise CatalogueError(f"catalogue {catalogue.source}: none of its {len(paths)} images could be read")
        manifest = _new_manifest(encoder, catalogue, pins=len(rows), images=len(ok))
        target = Path(out_dir).expanduser()

        def write(folder: Path) -> None:
            _write_database(folder / DATABASE_FILE, rows)
            if vectors is not None:
                _write_vectors(folder / VECTORS_FILE, vectors)
            descriptors = write_local_store(folder / LOCAL_DIR, ((image_id, entries[i])
                                                                  for image_id, i in enumerate(kept)))
            write_vocabulary(build_vocabulary(descriptors), folder / VOCABULARY_FILE)
            manifest["local_features"]["descriptors"] = int(len(descriptors))
            (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

        replace_directory_atomically(target, write, is_replaceable=_looks_like_index)
        index = cls.load(target, encoder=encoder)
        index.build_report = BuildReport(len(rows), len(ok), skipped, time.perf_counter() - started)
        return index

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str | os.PathLike, encoder: Encoder | Literal["manifest"] | None = "manifest", *,
             device: str = "auto", offline: bool | None = None) -> "PinIndex":
        """Open an index directory and check it is whole and matches ``encoder``.

        ``encoder="manifest"`` loads the encoder the index was built with (none
        for a local-features-only index); pass an ``Encoder`` to reuse a loaded
        one (it must be the same model and weights), or ``None`` to only inspect,
        search by vector, or identify with local features alone.
        """
        folder = Path(path).expanduser()
        manifest = read_manifest(folder)
        recorded = manifest["encoder"]
        vectors = _read_vectors(folder / VECTORS_FILE) if recorded is not None else None
        table = _read_table(folder / DATABASE_FILE)
        expected_images = manifest["counts"]["images"]
        counts = [len(table.image_ids)] + ([vectors.ntotal] if vectors is not None else [])
        if any(count != expected_images for count in counts):
            raise IndexFormatError(
                f"index {folder} is inconsistent: manifest lists {expected_images} images, "
                f"{DATABASE_FILE} has {len(table.image_ids)}"
                + (f", {VECTORS_FILE} has {vectors.ntotal}" if vectors is not None else "") + "; rebuild it")
        if vectors is not None and vectors.d != recorded["embedding_dim"]:
            raise IndexFormatError(f"index {folder}: {VECTORS_FILE} has dimension {vectors.d}, "
                                   f"manifest says {recorded['embedding_dim']}; rebuild it")
        recogniser = _load_recogniser(folder, manifest, table)
        if recorded is None:
            if encoder is not None and encoder != "manifest":
                raise EncoderMismatchError(f"index {folder} was built with local features only "
                                           f"(--encoder local); it cannot use encoder {encoder.spec.describe()}")
            encoder = None
        elif encoder == "manifest":
            spec = EncoderSpec(recorded["model"], recorded.get("pretrained"))
            try:
                encoder = Encoder.load(spec, device=device, offline=offline)
            except WeightsUnavailableError as exc:
                raise WeightsUnavailableError(
                    f"index {folder} needs encoder {spec.describe()}: {exc} (if the weights moved, "
                    "pass --model/--pretrained pointing at the same weights)") from exc
        if encoder is not None:
            check_encoder(folder, recorded, encoder)
        return cls(folder, manifest, vectors, table, encoder, recogniser)

    # ---------------------------------------------------------------- search
    def __len__(self) -> int:
        return len(self._table.pins)

    @property
    def has_vectors(self) -> bool:
        """Whether the index has CLIP vectors (false for a local-features-only index)."""
        return self._vectors is not None

    @property
    def calibration(self) -> Calibration:
        """The confidence calibration this index answers with (copied into the manifest at build time)."""
        return self._recogniser.calibration

    def replace_calibration(self, calibration: Calibration) -> None:
        """Make this index answer with another calibration, e.g. one fitted on your own labelled photos."""
        manifest = {**self.manifest, "calibration": calibration.to_dict()}
        write_file_atomically(self.path / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
        self.manifest = manifest
        self._recogniser.calibration = calibration

    def identify(self, image: ImageSource, k: int = 5, *, verify: bool = True) -> Identification:
        """Identify one photo; raises ``ImageError`` if it cannot be read."""
        result = self.identify_many([image], k=k, verify=verify)[0]
        if result.error is not None:
            raise ImageError(result.error)
        return result

    def identify_many(self, images: Sequence[ImageSource], k: int = 5, *, batch_size: int = 32,
                      verify: bool = True, candidates: int = DEFAULT_CANDIDATES,
                      on_progress: Callable[[int], None] | None = None) -> list[Identification]:
        """Identify many photos; an unreadable photo gets an ``error``, the rest still answer.

        With ``verify`` (the default), CLIP candidates (if the index has an
        encoder) and local-feature candidates are merged, the first
        ``candidates`` are verified geometrically and by colour, and each answer
        gets a calibrated confidence. ``verify=False`` ranks by CLIP alone.
        """
        if not verify:
            return self._identify_by_clip(images, k, batch_size, on_progress)
        results = []
        for start in range(0, len(images), batch_size):  # each photo is decoded once, a batch at a time
            chunk = images[start:start + batch_size]
            photos: list[Image.Image | str] = []
            for source in chunk:
                try:
                    photos.append(load_image(source))
                except ImageError as exc:
                    photos.append(str(exc))
            readable = [photo for photo in photos if not isinstance(photo, str)]
            clip = iter(self._clip_candidates(readable, candidates))
            for source, photo in zip(chunk, photos):
                if isinstance(photo, str):
                    results.append(Identification(_query_name(source), [], photo))
                else:
                    ranked, back = self._recogniser.candidates(photo, next(clip), limit=candidates)
                    confidence = self._recogniser.confidence(ranked)
                    results.append(Identification(_query_name(source), self._verified_matches(ranked, k, back),
                                                  None, confidence, confidence < self.calibration.threshold))
                if on_progress is not None:
                    on_progress(1)
        return results

    def _clip_candidates(self, photos: list[Image.Image], candidates: int) -> list[list[tuple[int, float]]]:
        """(image id, cosine) of the CLIP top list per decoded photo; empty lists without an encoder."""
        if self.encoder is None or not photos:
            return [[] for _ in photos]
        encoded = self.encoder.encode_images(photos, batch_size=len(photos))
        scores, ids = self._require_searcher().search(encoded.vectors, min(candidates, len(self._table.image_ids)))
        found: dict[int, list[tuple[int, float]]] = {
            position: [(int(i), float(v)) for i, v in zip(id_row, score_row) if i >= 0]
            for position, score_row, id_row in zip(encoded.ok, scores, ids)}
        return [found.get(position, []) for position in range(len(photos))]

    def verified_candidates(self, image: ImageSource, *, candidates: int = DEFAULT_CANDIDATES
                            ) -> tuple[list[Candidate], float]:
        """Every verified candidate for one photo with its features (for calibration and diagnosis).

        Returns the candidates best first and the factor from their polygons' pixels to the photo's.
        """
        photo = load_image(image)
        clip = self._clip_candidates([photo], candidates)[0]
        return self._recogniser.candidates(photo, clip, limit=candidates)

    def pin_of(self, candidate: Candidate) -> str:
        """The pin id of a candidate's reference image."""
        return self._table.pins[candidate.pin_row][0]

    def identify_multi(self, image: ImageSource, *, min_confidence: float | None = None) -> list[Found]:
        """Every catalogue pin verified in one photo of a board or lanyard, most confident first.

        ``min_confidence`` defaults to the calibrated threshold. The same pin
        shown twice in one photo is reported once.
        """
        photo = load_image(image)
        found = self._recogniser.find_all(photo, min_confidence=min_confidence)
        return [Found(self._verified_matches([candidate], 1, 1.0)[0], confidence, polygon)
                for candidate, confidence, polygon in found]

    def _verified_matches(self, ranked: Sequence[Candidate], k: int, back: float) -> list[Match]:
        matches: list[Match] = []
        seen: set[int] = set()
        for candidate in ranked:
            if candidate.pin_row in seen:
                continue
            seen.add(candidate.pin_row)
            pin_id, name, metadata = self._table.pins[candidate.pin_row]
            check = candidate.verification
            polygon = None if check.polygon is None else np.round(check.polygon * back, 1).tolist()
            probability = 1.0 / (1.0 + float(np.exp(-np.clip(candidate.rank_score, -40, 40))))
            matches.append(Match(len(matches) + 1, pin_id, name, probability, json.loads(metadata),
                                 self._table.image_paths[candidate.image_id], check.distinct_inliers,
                                 check.colour_distance if check.aligned else None, polygon))
            if len(matches) == k:
                break
        return matches

    def _identify_by_clip(self, images: Sequence[ImageSource], k: int, batch_size: int,
                          on_progress: Callable[[int], None] | None) -> list[Identification]:
        encoder = self._require_encoder()
        encoded = encoder.encode_images(images, batch_size=batch_size, on_progress=on_progress)
        ranked = self.search(encoded.vectors, k=k)
        by_position = dict(zip(encoded.ok, ranked))
        errors = dict(encoded.failures)
        return [Identification(_query_name(image), by_position.get(i, []), errors.get(i))
                for i, image in enumerate(images)]

    def search(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Top-``k`` pins per CLIP query vector, each pin scored by its best reference image."""
        if k < 1:
            raise PinidError("k must be at least 1")
        searcher = self._require_searcher()
        queries = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self._vectors.d)
        if len(queries) == 0:
            return []
        total = self._vectors.ntotal
        depth = min(total, max(4 * k, k + 32))
        while True:
            scores, ids = searcher.search(queries, depth)
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
            if self._vectors is None:
                raise PinidError(f"index {self.path} has local features only: CLIP search is not available")
            raise PinidError("this index was loaded without an encoder; load it with encoder='manifest'")
        return self.encoder

    def _require_searcher(self) -> "_ExactSearcher":
        if self._searcher is None:
            raise PinidError(f"index {self.path} has local features only: CLIP search is not available")
        return self._searcher

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
        int(manifest["counts"]["images"]), int(manifest["local_features"]["descriptors"])
        if manifest["encoder"] is not None:
            int(manifest["encoder"]["embedding_dim"]), manifest["encoder"]["model"]
    except (KeyError, TypeError, ValueError):
        raise IndexFormatError(f"index {folder}: {MANIFEST_FILE} lacks counts, encoder or local-feature fields"
                               ) from None
    return manifest


def _load_recogniser(folder: Path, manifest: dict[str, Any], table: _PinTable) -> Recogniser:
    store = LocalStore.load(folder)
    if len(store.descriptors) != manifest["local_features"]["descriptors"] or set(store.image_ids.tolist()) != set(
            table.image_ids.tolist()):
        raise IndexFormatError(f"index {folder} is inconsistent: its local features do not cover the same "
                               "images as the catalogue; rebuild it")
    vocabulary = read_vocabulary(folder / VOCABULARY_FILE, len(store.descriptors))
    calibration = (Calibration.from_dict(manifest["calibration"]) if manifest.get("calibration")
                   else default_calibration())
    designs = {}
    for pin_row, (pin_id, _, metadata) in table.pins.items():
        design = json.loads(metadata).get("design")
        designs[pin_row] = str(design) if design else pin_id
    image_pin_rows = dict(zip(table.image_ids.tolist(), table.image_pin_rows.tolist()))
    return Recogniser(store, vocabulary, image_pin_rows, designs, calibration)


def _reference_entries(paths: list[Path], workers: int, on_features: Callable[[int], None] | None
                       ) -> tuple[list[ReferenceEntry | None], list[tuple[int, str]]]:
    """Local features of every reference image, in threads (OpenCV releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(path: Path) -> ReferenceEntry | str:
        try:
            return reference_entry(load_image(path))
        except ImageError as exc:
            return str(exc).split(": ", 1)[-1]

    entries: list[ReferenceEntry | None] = []
    failures: list[tuple[int, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for position, outcome in enumerate(pool.map(one, paths)):
            if isinstance(outcome, str):
                failures.append((position, outcome))
                entries.append(None)
            else:
                entries.append(outcome)
            if on_features is not None:
                on_features(1)
    return entries, failures


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


def _new_manifest(encoder: Encoder | None, catalogue: Catalogue, *, pins: int, images: int) -> dict[str, Any]:
    import cv2
    import faiss

    from .local_features import DESCRIPTOR_DIMS, MAX_REFERENCE_FEATURES

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "pinid_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": None if encoder is None else encoder.identity(),
        "counts": {"pins": pins, "images": images},
        "vectors": None if encoder is None else {
            "file": VECTORS_FILE, "faiss_index": "IDMap2,Flat", "metric": "inner_product",
            "faiss_version": faiss.__version__},
        "local_features": {"kind": f"PCA{DESCRIPTOR_DIMS}-RootSIFT, 3 scales + 4 tilts, light and dark backdrop",
                           "max_per_image": MAX_REFERENCE_FEATURES,
                           "descriptors": 0, "vocabulary": VOCABULARY_FILE, "opencv_version": cv2.__version__},
        "calibration": default_calibration().to_dict(),
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
