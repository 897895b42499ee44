"""``PinIndex``: the facade a user holds. It opens one index directory and delegates.

Building is ``index.build``, the layout and manifest ``index.format``, files
``index.storage``, CLIP search ``index.search``, and every verified answer is
made by ``identify.recogniser.Recogniser``. Image ids are stable integers
shared by FAISS, SQLite and the local store. Nothing is pickled.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Literal, Sequence

import numpy as np
from PIL import Image

from .._atomic import stale_siblings
from ..catalogue import Catalogue, PinRecord
from ..encoder.clip import Encoder, check_text_query
from ..encoder.weights import EncoderSpec
from ..errors import (EncoderMismatchError, ImageError, IndexFormatError, InputError, LocalOnlyError,
                      WeightsUnavailableError)
from ..identify.confidence import Calibration, default_calibration
from ..identify.pin_table import PinTable
from ..identify.recogniser import Candidate, LocalConfig, Recogniser
from ..images import ImageSource, load_image
from ..local.store import LocalStore
from ..local.vocabulary import read_vocabulary
from ..results import BuildReport, Found, Identification, Match, Progress, counting
from .build import BuildOptions, build_index
from .change import Action, ChangeReport, change_index, replace_manifest
from .format import (DATABASE_FILE, LOCAL_DIR, MANIFEST_FILE, VECTORS_FILE, Manifest, check_encoder,
                     read_manifest)
from .search import search_pins
from .vectors import VectorIndexSpec, make_searcher
from .storage import read_table, read_vectors

if TYPE_CHECKING:
    from ..encoder.cache import EmbeddingCache
    from ..local.cache import FeatureCache


@dataclass(frozen=True)
class _Generation:
    """Everything read from one generation of an index directory (swapped whole by ``reload``)."""

    manifest: Manifest
    searcher: Any  # ExactSearcher, or vectors.ApproximateSearcher for an IVF index; None without CLIP
    table: PinTable
    recogniser: Recogniser


class PinIndex:
    """A searchable catalogue of pins. Build with :meth:`build`, open with :meth:`load`.

    A loaded index answers from one consistent generation of its directory,
    whatever writers do meanwhile; :meth:`reload` moves it to the newest one.
    """

    def __init__(self, path: Path, generation: _Generation, encoder: Encoder | None) -> None:
        self.path = path
        self.encoder = encoder
        self.build_report: BuildReport | None = None
        self._state = generation

    @property
    def manifest(self) -> Manifest:
        return self._state.manifest

    @property
    def _table(self) -> PinTable:
        return self._state.table

    @property
    def _recogniser(self) -> Recogniser:
        return self._state.recogniser

    @property
    def _searcher(self) -> Any:
        return self._state.searcher

    @property
    def generation(self) -> int:
        """The generation this object answers from: 1 after a build, one more per change."""
        return self._state.manifest.generation

    # ----------------------------------------------------------------- build
    @classmethod
    def build(cls, catalogue: Catalogue, out_dir: str | os.PathLike, encoder: Encoder | None, *,
              batch_size: int = 32, workers: int = 2, cache: EmbeddingCache | None = None,
              config: LocalConfig | None = None, feature_cache: FeatureCache | None = None,
              index_type: str = "auto", on_progress: Progress | None = None) -> "PinIndex":
        """Encode every reference image, extract its local features and write a new index atomically.

        Args:
            catalogue: from :func:`pinid.read_catalogue`.
            out_dir: the index directory to create, or an existing pinid index to replace.
            encoder: a loaded :class:`Encoder`, or ``None`` for a local-features-only index (no model).
            cache: an ``EmbeddingCache`` keyed by file content: a rebuild encodes only new or
                changed files, and an interrupted build resumes.
            feature_cache: a ``pinid.local.cache.FeatureCache``, the same for local features.
            index_type: the CLIP vector index: "auto" (exact up to 50,000 images, IVF with fp16
                codes above), or "flat", "ivf-sq8", "ivf-fp16" to force one (recorded in the manifest;
                later changes keep it).
            config: the local-feature settings (default ``LocalConfig()``), recorded in the manifest
                and used by every query of this index.
            on_progress: ``(stage, done, total)`` for the stages "encoding" (CLIP only) and
                "local features".

        Returns:
            The loaded index; ``build_report`` lists pins, images, seconds and every skipped file.

        Raises:
            InputError: ``out_dir`` exists and is not a pinid index (nothing is touched).
            CatalogueError: no image of the catalogue could be read.

        Example:
            >>> index = PinIndex.build(read_catalogue("pins/"), "pins.index", Encoder.load())  # doctest: +SKIP
        """
        target = Path(out_dir).expanduser()
        options = BuildOptions(batch_size, workers, cache, config or LocalConfig(), index_type, feature_cache)
        report = build_index(catalogue, target, encoder, options, on_progress)
        index = cls.load(target, encoder=encoder)
        index.build_report = report
        return index

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path: str | os.PathLike, encoder: Encoder | Literal["manifest"] | None = "manifest", *,
             device: str = "auto", offline: bool | None = None) -> "PinIndex":
        """Open an index directory and check it is whole and matches ``encoder``.

        Args:
            path: an index directory made by :meth:`build` or ``pinid build-index``.
            encoder: ``"manifest"`` loads the encoder the index was built with (none for a
                local-features-only index); an ``Encoder`` reuses a loaded one (it must be the same
                model, weights and preprocessing); ``None`` only inspects, searches by vector, or
                identifies with local features alone.
            device, offline: passed to :meth:`Encoder.load` when the encoder is loaded here.

        Raises:
            IndexFormatError: the directory is missing, damaged, inconsistent or of another format.
            EncoderMismatchError: ``encoder`` is not the one the index was built with.
            WeightsUnavailableError: the recorded encoder's weights cannot be found.
        """
        folder = Path(path).expanduser()
        generation = read_generation(folder)
        recorded = generation.manifest.encoder
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
        if encoder is not None and recorded is not None:
            check_encoder(folder, recorded, encoder)
        return cls(folder, generation, encoder)

    def reload(self) -> bool:
        """Move to the newest generation of the directory (for long-running readers); True if it changed.

        In-flight calls finish on the generation they started with. The
        encoder is kept: an index rebuilt with another encoder raises
        ``EncoderMismatchError`` and this object stays as it was.
        """
        generation = read_generation(self.path)
        if generation.manifest.generation == self.generation and generation.manifest == self.manifest:
            return False
        recorded = generation.manifest.encoder
        if (recorded is None) != (self._state.manifest.encoder is None):
            raise EncoderMismatchError(f"index {self.path} was rebuilt with "
                                       f"{'local features only' if recorded is None else 'an encoder'}; load it anew")
        if recorded is not None and self.encoder is not None:
            check_encoder(self.path, recorded, self.encoder)
        self._state = generation
        return True

    # ---------------------------------------------------------------- facts
    def __len__(self) -> int:
        return len(self._table.pins)

    @property
    def has_vectors(self) -> bool:
        """Whether the index has CLIP vectors (false for a local-features-only index)."""
        return self._searcher is not None

    @property
    def recogniser(self) -> Recogniser:
        """What makes every verified answer (its store, vocabulary and config): for scripts that time its stages."""
        return self._recogniser

    @property
    def calibration(self) -> Calibration:
        """The confidence calibration this index answers with (copied into the manifest at build time)."""
        return self._recogniser.calibration

    def replace_calibration(self, calibration: Calibration) -> None:
        """Make this index answer with another calibration, e.g. one fitted on your own labelled photos.

        Written as a new generation (every other file hard-linked), so readers never see it half-made.
        """
        replace_manifest(self.path, lambda manifest: replace(manifest, calibration=calibration.to_dict()))
        self.reload()

    # ------------------------------------------------------------------ change
    def add(self, catalogue: Catalogue, *, batch_size: int = 32, workers: int = 2,
            cache: EmbeddingCache | None = None, feature_cache: FeatureCache | None = None,
            on_progress: Progress | None = None) -> ChangeReport:
        """Add new pins, and new images of known pins, from ``catalogue``; known images are left as they are.

        Only the new images are encoded and their local features extracted
        (none, when ``cache``/``feature_cache`` know their content), with the same
        checks as a build: unreadable images are skipped and listed in the report.
        The change is one new generation, written atomically; this object then answers from it.

        Raises:
            InputError: the index has CLIP vectors but was loaded with ``encoder=None``.
            EncoderMismatchError: this object's encoder is not the index's.
        """
        return self._change("add", catalogue=catalogue, options=BuildOptions(
            batch_size, workers, cache, feature_cache=feature_cache), on_progress=on_progress)

    def update(self, catalogue: Catalogue, *, batch_size: int = 32, workers: int = 2,
               cache: EmbeddingCache | None = None, feature_cache: FeatureCache | None = None,
               on_progress: Progress | None = None) -> ChangeReport:
        """Replace the name, metadata and images of every pin ``catalogue`` lists (pins not yet in the index are added).

        Images whose content is already in the index under that pin are kept
        as they are (not encoded again); the pin's other images are dropped.
        A pin none of whose new images can be read is left as it was.
        """
        return self._change("update", catalogue=catalogue, options=BuildOptions(
            batch_size, workers, cache, feature_cache=feature_cache), on_progress=on_progress)

    def remove(self, pin_ids: Sequence[str]) -> ChangeReport:
        """Remove these pins and all their images.

        Raises:
            InputError: an id is not in the index (nothing is removed), or none is given, or all of them are.
        """
        return self._change("remove", remove=list(pin_ids))

    def _change(self, action: Action, **kwargs: Any) -> ChangeReport:
        report = change_index(self.path, action, encoder=self.encoder, **kwargs)
        self.reload()
        return report

    def info(self) -> dict[str, Any]:
        """A summary of the manifest, for people and for `pinid info --json`."""
        return {"path": str(self.path), **self.manifest.to_dict()}

    def reference_images(self, pin_id: str) -> list[str]:
        """Paths of a pin's reference images, as recorded at build time."""
        return self._table.images_of(pin_id)

    def pin(self, pin_id: str) -> PinRecord | None:
        """A pin's name, metadata and reference image paths (as recorded at build time), or None if unknown."""
        state = self._state
        row = state.table.pin(pin_id)
        if row is None:
            return None
        images = tuple(Path(path) for path in state.table.images_of(pin_id))
        return PinRecord(row.pin_id, row.name, dict(row.metadata), images)

    def pin_of(self, candidate: Candidate) -> str:
        """The pin id of a candidate's reference image."""
        return self._table.pins[candidate.pin_row].pin_id

    # -------------------------------------------------------------- identify
    def identify(self, image: ImageSource, k: int = 5, *, verify: bool = True) -> Identification:
        """Identify one photo; raises ``ImageError`` if it cannot be read."""
        result = self.identify_many([image], k=k, verify=verify)[0]
        if result.error is not None:
            raise ImageError(result.query, result.error)
        return result

    def identify_many(self, images: Sequence[ImageSource], k: int = 5, *, batch_size: int = 32,
                      verify: bool = True, candidates: int | None = None,
                      on_progress: Progress | None = None) -> list[Identification]:
        """Identify many photos; an unreadable photo gets an ``error``, the rest still answer.

        Args:
            images: paths, bytes or PIL images.
            k: pins listed per photo (at least 1).
            verify: with ``True`` (the default) CLIP candidates (if the index has an encoder)
                and local-feature candidates are merged, the first ``candidates`` are verified
                geometrically and by colour, and each answer gets a calibrated confidence.
                ``False`` ranks by CLIP similarity alone.
            candidates: (reference image, orientation) pairs verified per photo (default: the index's
                ``LocalConfig.candidates.max_tries``, 90); also the depth of the CLIP top list.
            on_progress: ``(stage, done, total)`` with stage "identifying", once per photo answered.

        Returns:
            One :class:`Identification` per input, in order; ``error`` says why a photo could not be read.

        Raises:
            InputError: ``k`` or ``candidates`` below 1.
            LocalOnlyError: ``verify=False`` on an index without CLIP vectors.
        """
        state = self._state  # one generation for the whole call, whatever reload() does meanwhile
        candidates = state.recogniser.config.candidates.max_tries if candidates is None else candidates
        _check_positive(k=k, candidates=candidates, batch_size=batch_size)
        if not verify:
            return self._identify_by_clip(state, images, k, batch_size, on_progress)
        results = []
        for start in range(0, len(images), batch_size):  # each photo is decoded once, a batch at a time
            chunk = images[start:start + batch_size]
            photos: list[Image.Image | ImageError] = []
            for source in chunk:
                try:
                    photos.append(load_image(source))
                except ImageError as exc:
                    photos.append(exc)
            readable = [photo for photo in photos if isinstance(photo, Image.Image)]
            clip = iter(self._clip_candidates(state, readable, candidates))
            for source, photo in zip(chunk, photos):
                if isinstance(photo, ImageError):
                    results.append(Identification(_query_name(source), [], photo.reason))
                else:
                    results.append(state.recogniser.identify(photo, next(clip), k=k, limit=candidates,
                                                             query=_query_name(source)))
                if on_progress is not None:
                    on_progress("identifying", len(results), len(images))
        return results

    def identify_multi(self, image: ImageSource, *, min_confidence: float | None = None) -> list[Found]:
        """Every catalogue pin verified in one photo of a board or lanyard, most confident first.

        ``min_confidence`` defaults to the calibrated threshold. The same pin
        shown twice in one photo is reported once.
        """
        return self._recogniser.find_all(load_image(image), min_confidence=min_confidence)

    def verified_candidates(self, image: ImageSource, *, candidates: int | None = None,
                            exclude_pins: Collection[str] = ()) -> tuple[list[Candidate], float]:
        """Every verified candidate for one photo with its features (for calibration and diagnosis).

        Pins in ``exclude_pins`` are left out as if they were not in the index
        (self-calibration's leave-pins-out, without a rebuild); unknown ids are ignored.
        Returns the candidates best first and the factor from their polygons' pixels to the photo's.
        """
        photo = load_image(image)
        state = self._state
        limit = state.recogniser.config.candidates.max_tries if candidates is None else candidates
        excluded = state.table.image_ids_of(exclude_pins)
        clip = self._clip_candidates(state, [photo], limit + len(excluded))[0]
        return state.recogniser.candidates(photo, clip, limit=limit, exclude=excluded)

    def search(self, vectors: Any, k: int = 5) -> list[list[Match]]:
        """Top-``k`` pins per CLIP query vector, each pin at its best reference image (``similarity``)."""
        _check_positive(k=k)
        state = self._state
        return search_pins(_require_searcher(self.path, state), state.table, vectors, k)

    def search_text(self, query: str, k: int = 5) -> list[Match]:
        """Top-``k`` pins for a description ("gold fox with a red rim"), by CLIP text-image similarity.

        ``Match.similarity`` is the cosine of the text's embedding with the pin's
        best reference image; it equals ``search(encoder.encode_texts([query]), k)[0]``.
        The encoder's text tower is loaded on the first text search.

        Raises:
            InputError: ``k`` below 1, an empty query, or an index loaded with ``encoder=None``.
            LocalOnlyError: the index has local features only (no CLIP vectors).
        """
        _check_positive(k=k)
        if self._searcher is None:
            raise LocalOnlyError(f"index {self.path} has local features only (--encoder local): text search "
                                 "needs CLIP vectors; build the index without --encoder local")
        check_text_query(query)
        if self.encoder is None:
            raise InputError("this index was loaded without an encoder (encoder=None); for text search load it "
                             "with PinIndex.load(path), which loads the encoder it was built with")
        return self.search(self.encoder.encode_texts([query]), k)[0]

    def _clip_candidates(self, state: _Generation, photos: list[Image.Image],
                         candidates: int) -> list[list[tuple[int, float]]]:
        """(image id, cosine) of the CLIP top list per decoded photo; empty lists without an encoder."""
        if self.encoder is None or state.searcher is None or not photos:
            return [[] for _ in photos]
        encoded = self.encoder.encode_images(photos, batch_size=len(photos))
        scores, ids = state.searcher.search(encoded.vectors, min(candidates, len(state.table.image_ids)))
        found: dict[int, list[tuple[int, float]]] = {
            position: [(int(i), float(v)) for i, v in zip(id_row, score_row) if i >= 0]
            for position, score_row, id_row in zip(encoded.ok, scores, ids)}
        return [found.get(position, []) for position in range(len(photos))]

    def _identify_by_clip(self, state: _Generation, images: Sequence[ImageSource], k: int, batch_size: int,
                          on_progress: Progress | None) -> list[Identification]:
        searcher = _require_searcher(self.path, state)
        if self.encoder is None:
            raise InputError("this index was loaded without an encoder; load it with encoder='manifest'")
        encoded = self.encoder.encode_images(images, batch_size=batch_size,
                                             on_progress=counting(on_progress, "identifying", len(images)))
        ranked = search_pins(searcher, state.table, encoded.vectors, k)
        by_position = dict(zip(encoded.ok, ranked))
        errors = dict(encoded.failures)
        return [Identification(_query_name(image), by_position.get(i, []), errors.get(i))
                for i, image in enumerate(images)]



# --------------------------------------------------------------------- checks
def _require_searcher(path: Path, state: _Generation) -> Any:
    if state.searcher is None:
        raise LocalOnlyError(f"index {path} has local features only (--encoder local): CLIP search "
                             "and --no-verify are not available")
    return state.searcher


_LOAD_ATTEMPTS = 5  # a reader retries when a writer swapped the directory while it was being read


def read_generation(folder: Path) -> _Generation:
    """Read every file of the generation that is at ``folder`` now, through one directory handle.

    Writers never change a file in place; they swap in a whole new directory.
    Opening each file relative to the directory opened first therefore reads
    one generation only. If the directory is swapped and the old one deleted
    while it is being read, the read fails and is retried on the new one.
    """
    for attempt in range(_LOAD_ATTEMPTS):
        try:
            descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            if attempt + 1 < _LOAD_ATTEMPTS and _mid_swap(folder):
                time.sleep(0.05 * (attempt + 1))  # a writer without renameat2 is between its two renames
                continue
            read_manifest(folder)  # raises the clear message (missing, not a directory...)
            raise IndexFormatError(f"index {folder} cannot be opened") from None
        try:
            opened = os.fstat(descriptor)
            through = Path(f"/proc/self/fd/{descriptor}")
            by_handle = through.is_dir() and os.path.samestat(os.stat(through), opened)
            try:
                generation = _read_generation_files(through if by_handle else folder, folder)
            except (IndexFormatError, OSError) as exc:
                if attempt + 1 < _LOAD_ATTEMPTS and _swapped(folder, opened):
                    continue
                if isinstance(exc, OSError):
                    raise IndexFormatError(f"index {folder} cannot be read ({exc.strerror or exc})") from None
                raise IndexFormatError(str(exc).replace(str(through), str(folder))) from None
            if by_handle or not _swapped(folder, opened):
                return generation
        finally:
            os.close(descriptor)
    raise IndexFormatError(f"index {folder} changed {_LOAD_ATTEMPTS} times while it was being read; try again")


def _mid_swap(folder: Path) -> bool:
    """The index is missing but its backup is beside it: a writer is between the two renames of a swap
    (systems without renameat2), or died there and the next writer will put the backup back."""
    return not os.path.lexists(folder) and any(path.name.startswith(f".{folder.name}.old-")
                                               for path in stale_siblings(folder))


def _swapped(folder: Path, opened: os.stat_result) -> bool:
    try:
        return not os.path.samestat(os.stat(folder), opened)
    except OSError:
        return True


def _read_generation_files(base: Path, folder: Path) -> _Generation:
    manifest = read_manifest(base)
    recorded = manifest.encoder
    vectors = read_vectors(base / VECTORS_FILE) if recorded is not None else None
    table = read_table(base / DATABASE_FILE)
    counts = [len(table.image_ids)] + ([vectors.ntotal] if vectors is not None else [])
    if any(count != manifest.images for count in counts):
        raise IndexFormatError(
            f"index {folder} is inconsistent: manifest lists {manifest.images} images, "
            f"{DATABASE_FILE} has {len(table.image_ids)}"
            + (f", {VECTORS_FILE} has {vectors.ntotal}" if vectors is not None else "") + "; rebuild it")
    if vectors is not None and recorded is not None and vectors.d != recorded["embedding_dim"]:
        raise IndexFormatError(f"index {folder}: {VECTORS_FILE} has dimension {vectors.d}, "
                               f"manifest says {recorded['embedding_dim']}; rebuild it")
    store = LocalStore.load(base / LOCAL_DIR, manifest.segments)
    if not np.array_equal(store.image_ids, table.image_ids):
        raise IndexFormatError(f"index {folder} is inconsistent: its local features do not cover the same "
                               "images as the catalogue; rebuild it")
    searcher = None
    if vectors is not None:
        try:
            spec = VectorIndexSpec.from_dict((manifest.vectors or {}).get("index", {"kind": "flat"}))
        except IndexFormatError as exc:
            raise IndexFormatError(f"index {folder}: {MANIFEST_FILE}: {exc}; rebuild it") from None
        searcher = make_searcher(vectors, spec)
        stored = getattr(searcher, "image_ids", None)
        if stored is not None and not np.array_equal(np.sort(stored), table.image_ids):
            raise IndexFormatError(f"index {folder} is inconsistent: {VECTORS_FILE} and {DATABASE_FILE} list "
                                   "different images; rebuild it")
    config = manifest.config()
    vocabulary = read_vocabulary(base / LOCAL_DIR, [segment.name for segment in manifest.segments],
                                 manifest.descriptors, config.vote)
    vocabulary.exclude(store.dead_rows())
    calibration = (Calibration.from_dict(manifest.calibration) if manifest.calibration
                   else default_calibration())
    return _Generation(manifest, searcher, table, Recogniser(store, vocabulary, table, calibration, config))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise InputError(f"{name} must be at least 1, not {value}")


def _query_name(image: ImageSource) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
