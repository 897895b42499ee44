"""Building an index: encode, extract local features, and write the directory atomically.

The output is checked first (``check_output``), before any image is read;
the work is done before anything is written; the directory is written into
a fresh sibling and swapped in (``pinid._atomic``), so a failed or
interrupted build leaves the previous index untouched. One build at a time
writes a target (``pinid._atomic.output_lock``), and it clears the staging
folders a killed build left.

Reference images are reduced to ``FeatureConfig.reference_long_side_px`` (2048) before local
features: the views features are taken from are at most 512 px, so a
6000 x 6000 product shot gives the same kind of keypoints at 2048 px, for
about 250 MB and 3.5 s instead of 2.4 GB and 16 s. Images up to that size
are used as they are.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from PIL import Image

from .._atomic import output_lock, probe_writable, replace_directory_atomically
from .._version import __version__
from ..catalogue import Catalogue, PinRecord
from ..encoder.cache import EmbeddingCache, EmbedOptions, embed_files, sha256_or_reason
from ..encoder.clip import EncodeResult, Encoder
from ..errors import CatalogueError, ImageError, IndexFormatError, InputError
from ..identify.confidence import default_calibration
from ..identify.recogniser import LocalConfig
from ..images import load_image, working_copy
from ..local.features import DESCRIPTOR_DIMS, FeatureConfig, ReferenceEntry, reference_entry
from ..local.store import Segment, segment_name, write_segment
from ..local.vocabulary import SHARD_FILE, new_shard, train_template, voting_rows, write_shard
from ..results import BuildReport, Progress, counting
from .format import (DATABASE_FILE, FORMAT_VERSION, LOCAL_DIR, MANIFEST_FILE, VECTORS_FILE, Manifest,
                     is_index_directory, read_manifest)
from .storage import write_database, write_vectors
from .vectors import VectorIndexSpec, add_vectors, choose_vector_index, new_vector_index, spec_of

if TYPE_CHECKING:
    from ..local.cache import FeatureCache


def check_output(target: str | os.PathLike, catalogue_source: str | os.PathLike | None = None) -> Path:
    """The index directory to write for ``target``, or ``InputError`` before any work is done.

    Refused: an empty name, ``.`` or ``..``; a path that exists and is not a
    directory, or a directory that is not a pinid index (``is_index_directory``:
    nothing of a user's is ever replaced); the catalogue itself, a folder
    inside it or one holding it; a place where nothing can be created (a file
    as parent, ``/proc``, a read-only folder). A symbolic link to an index is
    followed: the directory it points to is replaced and the link stays.
    """
    text = os.fspath(target)
    if not str(text).strip():
        raise InputError("output path is empty: name the index directory to write (e.g. -o pins.index)")
    given = Path(text).expanduser()
    if given.name in ("", ".", ".."):
        raise InputError(f"output {text} names no index directory of its own; give one by name "
                         "(e.g. -o pins.index)")
    try:
        real = given.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise InputError(f"output {text} cannot be resolved ({exc})") from None
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise InputError(f"output {text} is the current directory or holds it; give the index its own folder")
    if catalogue_source is not None:
        _check_apart(text, real, catalogue_source)
    if real.exists():
        if not real.is_dir():
            raise InputError(f"output {text} exists and is not a directory")
        if not is_index_directory(real):
            raise InputError(f"output {text} exists and is not a pinid index (pinid replaces only an index "
                             "or an empty folder); choose another path")
        parent = real.parent
    else:
        parent = real.parent
        while not os.path.lexists(parent):
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"cannot create output {text}: {parent} is not a folder")
    probe_writable(parent, f"output {text}")
    return real


def _check_apart(text: str, real: Path, catalogue_source: str | os.PathLike) -> None:
    try:
        source = Path(catalogue_source).expanduser().resolve()
    except (OSError, RuntimeError):
        return  # the catalogue reader reports it
    if real == source:
        raise InputError(f"output {text} is the catalogue itself; write the index beside it (e.g. -o pins.index)")
    if source in real.parents:
        raise InputError(f"output {text} is inside the catalogue {source}; write the index beside it")
    if real in source.parents:
        raise InputError(f"output {text} holds the catalogue {source}; write the index beside it")


@dataclass(frozen=True)
class BuildOptions:
    """How a build runs. ``config`` is written whole into the manifest and used by every query."""

    batch_size: int = 32
    workers: int = 2
    cache: EmbeddingCache | None = None  # content-keyed embeddings: rebuilds encode only new images
    config: LocalConfig = field(default_factory=LocalConfig)
    index_type: str = "auto"  # the CLIP vector index: pinid.index.vectors.VECTOR_INDEX_TYPES
    feature_cache: FeatureCache | None = None  # content-keyed local features: rebuilds extract only new images
    #: sha256 (or why it cannot be read) of files already hashed elsewhere, by ``str(path)``: a Ray build
    #: (pinid.cluster) hashes the catalogue on the cluster, and the driver need not read every file again
    known_digests: Mapping[str, bytes | str] | None = None


def build_index(catalogue: Catalogue, target: Path, encoder: Encoder | None, options: BuildOptions = BuildOptions(),
                on_progress: Progress | None = None) -> BuildReport:
    """Do the whole build and swap the result in at ``target``; returns what was built and skipped.

    ``target`` is checked (``check_output``) and locked before any image is read.
    ``on_progress`` hears stages "encoding" (CLIP only) and "local features".
    """
    started = time.perf_counter()
    choose_vector_index(0, options.index_type)  # an unknown type is refused before any work
    target = check_output(target, catalogue.source)
    with output_lock(target):
        return _build_locked(catalogue, target, encoder, options, on_progress, started)


def _build_locked(catalogue: Catalogue, target: Path, encoder: Encoder | None, options: BuildOptions,
                  on_progress: Progress | None, started: float) -> BuildReport:
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
        encoded = encode_paths(paths, encoder, options, on_progress)
        skipped += [(str(paths[i]), reason) for i, reason in encoded.failures]
        ok = list(encoded.ok)
    entries, failures = reference_entries([paths[i] for i in ok], options, on_progress)
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

    def write(folder: Path) -> None:
        write_database(folder / DATABASE_FILE, list(rows.values()), options.known_digests)
        spec = None
        if vectors is not None:
            index = vector_index(vectors, np.arange(len(vectors), dtype=np.int64), options.index_type)
            spec = spec_of(index)
            write_vectors(folder / VECTORS_FILE, index)
        segment = segment_name(0)
        count, descriptors = write_segment(folder / LOCAL_DIR / segment,
                                           ((image_id, entries[i]) for image_id, i in enumerate(kept)))
        owners = np.repeat(np.arange(len(kept)), [len(entries[i].features) for i in kept])
        voting = voting_rows(owners, options.config.vote, len(kept))
        template = train_template(descriptors[voting], options.config.vote)
        write_shard(new_shard(descriptors[voting], voting, template), folder / LOCAL_DIR / segment)
        manifest = new_manifest(encoder, catalogue, pins=len(rows), images=len(ok), descriptors=len(voting),
                                config=options.config, segments=[Segment(segment, 0, count)],
                                generation=_generation_after(target), vectors=spec,
                                index_type=options.index_type)
        (folder / MANIFEST_FILE).write_bytes(manifest.to_json())

    replace_directory_atomically(target, write, is_replaceable=is_index_directory, locked=True)
    return BuildReport(len(rows), len(ok), skipped, time.perf_counter() - started)


def vector_index(vectors: np.ndarray, image_ids: np.ndarray, requested: str = "auto") -> Any:
    """The CLIP vector index for these vectors, of the kind ``choose_vector_index`` picks for their count."""
    spec = choose_vector_index(len(vectors), requested)
    index = new_vector_index(spec, vectors.shape[1], vectors if spec.kind != "flat" else None)
    add_vectors(index, vectors, image_ids)
    return index


def vectors_entry(spec: VectorIndexSpec, requested: str = "auto") -> dict[str, Any]:
    """The manifest's ``vectors`` object: the FAISS index kind and parameters, and what was asked for."""
    import faiss

    kind = "IDMap2,Flat" if spec.kind == "flat" else \
        f"IVF{spec.lists},{'SQ8' if spec.kind == 'ivf-sq8' else 'SQfp16'}"
    return {"file": VECTORS_FILE, "faiss_index": kind, "metric": "inner_product",
            "faiss_version": faiss.__version__, "index": spec.to_dict(), "requested": requested}


def _generation_after(target: Path) -> int:
    """A rebuild continues the generation count of the index it replaces, so readers see it as newer."""
    try:
        return read_manifest(target).generation + 1
    except IndexFormatError:
        return 1


def new_manifest(encoder: Encoder | None, catalogue: Catalogue, *, pins: int, images: int,
                 descriptors: int, segments: list[Segment], config: LocalConfig = LocalConfig(),
                 generation: int = 1, vectors: VectorIndexSpec | None = None, index_type: str = "auto") -> Manifest:
    import cv2

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Manifest(
        format_version=FORMAT_VERSION, pinid_version=__version__,
        created_at=created,
        encoder=None if encoder is None else encoder.identity(), pins=pins, images=images,
        vectors=None if encoder is None else vectors_entry(vectors or VectorIndexSpec("flat"), index_type),
        local_features={"kind": f"PCA{DESCRIPTOR_DIMS}-RootSIFT, 3 scales + 4 tilts, light and dark backdrop",
                        "max_per_image": config.features.max_reference_features, "descriptors": int(descriptors),
                        "vocabulary": f"{LOCAL_DIR}/*/{SHARD_FILE}", "opencv_version": cv2.__version__,
                        "segments": [segment.to_dict() for segment in segments]},
        calibration=default_calibration().to_dict(), catalogue_source=str(catalogue.source.resolve()),
        next_image_id=images, local_config=config.to_dict(), generation=generation,
        changes=[{"generation": generation, "action": "build", "at": created, "pins": pins, "images": images}])


def reference_entries(paths: list[Path], options: BuildOptions, on_progress: Progress | None
                      ) -> tuple[list[ReferenceEntry | None], list[tuple[int, str]]]:
    """Local features of every reference image, in threads (OpenCV releases the GIL).

    With ``options.feature_cache``, contents it knows are not extracted again,
    and each new entry is put there as soon as it is made: an interrupted build
    resumes where it stopped.
    """
    features = options.config.features
    cache = options.feature_cache
    digests: list[bytes | None] = [None] * len(paths)
    known: dict[int, ReferenceEntry] = {}
    if cache is not None:
        for position, path in enumerate(paths):
            digest = _digest(path, options.known_digests)
            if isinstance(digest, bytes):
                digests[position] = digest
                entry = cache.get(digest)
                if entry is not None:
                    known[position] = entry

    def one(position: int) -> ReferenceEntry | str:
        if position in known:
            return known[position]
        try:
            return reference_entry(reference_image(paths[position], features), config=features)
        except ImageError as exc:
            return exc.reason

    entries: list[ReferenceEntry | None] = []
    failures: list[tuple[int, str]] = []
    # on Ctrl-C or SIGTERM, map cancels what has not started
    with ThreadPoolExecutor(max(1, options.workers)) as pool:
        for position, outcome in enumerate(pool.map(one, range(len(paths)))):
            if isinstance(outcome, str):
                failures.append((position, outcome))
                entries.append(None)
            else:
                entries.append(outcome)
                digest = digests[position]
                if cache is not None and digest is not None and position not in known:
                    cache.put(digest, outcome)
            if on_progress is not None:
                on_progress("local features", position + 1, len(paths))
    if cache is not None:
        cache.flush()
    return entries, failures


def reference_image(path: Path | bytes, config: FeatureConfig = FeatureConfig()) -> Image.Image:
    """A reference image (a path, or its bytes) as local features see it: reduced to
    ``config.reference_long_side_px`` if larger.

    A JPEG is decoded at a reduced scale (DCT scaling) where that still leaves
    enough pixels; images up to the limit are used as they are.
    """
    side = config.reference_long_side_px
    image, _ = working_copy(load_image(path, min_side=side), side)
    return image


def encode_paths(paths: list[Path], encoder: Encoder, options: BuildOptions, on_progress: Progress | None
            ) -> EncodeResult:
    """CLIP vectors of every path; with a cache, known contents come from it (and count as done)."""
    if options.cache is None:
        return encoder.encode_images(paths, batch_size=options.batch_size, workers=options.workers,
                                     on_progress=counting(on_progress, "encoding", len(paths)))

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "encoding" and on_progress is not None:  # one count over all images
            on_progress("encoding", len(paths) - total + done, len(paths))

    embedded = embed_files(paths, encoder, options.cache,
                           EmbedOptions(batch_size=options.batch_size, workers=options.workers), progress,
                           digests=None if options.known_digests is None
                           else [_digest(path, options.known_digests) for path in paths])
    if on_progress is not None:
        on_progress("encoding", len(paths), len(paths))
    ok = [position for position in range(len(paths)) if embedded.content_of[position] >= 0]
    vectors = embedded.vectors[embedded.content_of[ok]].astype(np.float32, copy=False)
    failures = sorted(embedded.failures.items())
    return EncodeResult(np.ascontiguousarray(vectors), ok, failures)


def _digest(path: Path, known: Mapping[str, bytes | str] | None) -> bytes | str:
    """A file's sha256 as hashed before (``BuildOptions.known_digests``), or hashed now."""
    found = None if known is None else known.get(str(path))
    return found if found is not None else sha256_or_reason(path)


def _rows_by_pin(owners: list[PinRecord], paths: list[Path], ok: list[int]
                 ) -> dict[str, tuple[PinRecord, list[tuple[int, Path]]]]:
    rows: dict[str, tuple[PinRecord, list[tuple[int, Path]]]] = {}
    for image_id, position in enumerate(ok):
        pin = owners[position]
        rows.setdefault(pin.pin_id, (pin, []))[1].append((image_id, paths[position]))
    return rows


__all__ = ["BuildOptions", "build_index", "check_output", "encode_paths", "new_manifest", "reference_entries",
           "reference_image", "vector_index", "vectors_entry"]
