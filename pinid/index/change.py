"""Changing an index in place: add, update and remove pins, each change a new generation.

A change reads the current generation, does its work (encoding and local
features of *new* images only, with the same validation as a build: bad
images are skipped and listed), then writes the next generation into a fresh
sibling directory and swaps it in atomically (``pinid._atomic``), under the
same writer lock as a build. What does not change is hard-linked, not copied:

* local-feature segments with their vocabulary shards: linked; one new
  segment (and shard) holds the added images; a segment that lost images gets
  new small per-image tables and its shard is rewritten without their rows;
* the SQLite table: copied and edited (it holds paths and metadata only);
* ``vectors.faiss``: loaded, edited by id and written whole, since a FAISS
  file cannot be appended to. This, and the table, is where writing grows with
  the index (2 KB per image exact, 1 KB with the IVF-fp16 that large indexes get), not with the change.
* once, when the vocabulary outgrows exact search, every shard is retrained as
  an inverted file.

``kill -9`` at any point leaves the old generation in place; the next writer
clears what the dead one left (``pinid._atomic.output_lock``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from .._atomic import output_lock, replace_directory_atomically, stale_siblings
from ..catalogue import Catalogue, PinRecord
from ..encoder.cache import sha256_or_reason
from ..encoder.clip import Encoder
from ..errors import CatalogueError, IndexFormatError, InputError
from ..identify.pin_table import PinTable
from ..local.store import LocalStore, Segment, copy_segment, link_or_copy, segment_name, write_segment
from ..local.vocabulary import (SHARD_FILE, Vocabulary, new_shard, read_vocabulary, train_template, voting_rows,
                                write_shard)
from ..results import Progress
from ..tables import dumps, parse_json
from .build import BuildOptions, encode_paths, reference_entries, vector_index, vectors_entry
from .format import (DATABASE_FILE, FORMAT_VERSION, LOCAL_DIR, MANIFEST_FILE, MAX_CHANGES, VECTORS_FILE, Manifest,
                     check_encoder, is_index_directory, read_manifest)
from .vectors import add_vectors, choose_vector_index, spec_of
from .storage import TableChange, apply_table_change, read_digests, read_table, read_vectors, write_vectors

Action = Literal["add", "update", "remove"]
#: Segments (vocabulary shards) an index keeps at most: each add makes one, and each shard of an inverted-file
#: vocabulary costs one coarse-quantiser search per vote; past this the small ones are merged.
MAX_SEGMENTS = 16


@dataclass(frozen=True)
class ChangeReport:
    """What a change did, for the summary a user reads (and ``pinid info``'s change log)."""

    action: str
    generation: int
    pins_added: list[str] = field(default_factory=list)
    pins_replaced: list[str] = field(default_factory=list)
    pins_removed: list[str] = field(default_factory=list)
    images_added: int = 0
    images_removed: int = 0
    unchanged: int = 0  # images already in the index with the same content (not encoded again)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """False when the catalogue held nothing new: no new generation was written."""
        return bool(self.pins_added or self.pins_replaced or self.pins_removed or self.images_added
                    or self.images_removed)

    def log_entry(self) -> dict[str, Any]:
        """The manifest's record of this change (pin lists cut to a few names)."""
        def some(pins: list[str]) -> dict[str, Any]:
            return {"count": len(pins), "first": pins[:5]}

        return {"generation": self.generation, "action": self.action,
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "pins_added": some(self.pins_added), "pins_replaced": some(self.pins_replaced),
                "pins_removed": some(self.pins_removed), "images_added": self.images_added,
                "images_removed": self.images_removed, "skipped": len(self.skipped)}


def check_index_target(target: str | os.PathLike) -> Path:
    """An existing index directory to change (symlinks followed), or ``InputError``/``IndexFormatError``."""
    text = os.fspath(target)
    if not str(text).strip():
        raise InputError("index path is empty")
    folder = Path(os.path.realpath(Path(text).expanduser()))
    if not os.path.lexists(folder) and any(p.name.startswith(f".{folder.name}.old-") for p in stale_siblings(folder)):
        with output_lock(folder):  # a writer killed mid-swap (no renameat2) left only the backup: put it back
            pass
    read_manifest(folder)  # missing, not a directory, not an index, other version: one clear message
    if not is_index_directory(folder):
        raise InputError(f"{text} holds files that are not part of a pinid index; pinid changes only an index")
    return folder


def change_index(target: str | os.PathLike, action: Action, *, catalogue: Catalogue | None = None,
                 remove: Sequence[str] = (), encoder: Encoder | None = None,
                 options: BuildOptions = BuildOptions(), on_progress: Progress | None = None) -> ChangeReport:
    """Add, update (replace or add) or remove pins of the index at ``target`` as one new generation.

    ``options.config`` is ignored: a change always uses the settings the index was built with.
    """
    started = time.perf_counter()
    if action not in ("add", "update", "remove"):
        raise InputError(f"unknown change {action!r}: add, update or remove")
    if (catalogue is None) != (action == "remove"):
        raise InputError("add and update take a catalogue; remove takes pin ids")
    folder = check_index_target(target)
    if catalogue is not None:
        _check_apart(folder, catalogue)
    with output_lock(folder):
        current = _Current.read(folder, encoder)
        options = replace(options, config=current.manifest.config())
        if action == "remove":
            plan = current.plan_removal(remove)
        else:
            plan = current.plan_catalogue(catalogue, replace_pins=action == "update")
        added = _prepare_images(plan, current, encoder, options, on_progress)
        report = current.commit(action, plan, added, options, started)
    return report


def replace_manifest(target: str | os.PathLike, edit: Callable[[Manifest], Manifest],
                     action: str = "calibrate") -> Manifest:
    """A new generation whose manifest is ``edit(manifest)`` and every other file the same (hard-linked);
    ``action`` names the change in the manifest's log."""
    folder = check_index_target(target)
    with output_lock(folder):
        manifest = read_manifest(folder)
        updated = edit(manifest)
        generation = manifest.generation + 1
        entry = {"generation": generation, "action": action,
                 "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        updated = replace(updated, generation=generation, changes=(updated.changes + [entry])[-MAX_CHANGES:])

        def write(staging: Path) -> None:
            for entry in folder.iterdir():
                if entry.name == MANIFEST_FILE:
                    continue
                _link_tree(entry, staging / entry.name)
            (staging / MANIFEST_FILE).write_bytes(updated.to_json())

        replace_directory_atomically(folder, write, is_replaceable=is_index_directory, locked=True)
    return updated


# ----------------------------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    """What a change will do, decided before any image is read."""

    drop_pins: list[str] = field(default_factory=list)  # removed whole
    drop_images: set[int] = field(default_factory=set)
    write_pins: dict[str, PinRecord] = field(default_factory=dict)  # new or replaced pins
    new_pins: set[str] = field(default_factory=set)
    add_paths: list[tuple[str, Path, str]] = field(default_factory=list)  # (pin id, path, sha256 hex)
    move_images: list[tuple[int, Path]] = field(default_factory=list)
    replaced_images: dict[str, set[int]] = field(default_factory=dict)  # pin -> its old images an update drops
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Added:
    """The new images that could be read: their pins, paths, digests, vectors and local features."""

    owners: list[str]
    paths: list[Path]
    digests: list[str]
    vectors: np.ndarray | None
    entries: list[Any]


class _Current:
    """The generation a change starts from, loaded under the writer lock."""

    def __init__(self, folder: Path, manifest: Manifest, digests: dict[int, tuple[str, str]], table: PinTable,
                 store: LocalStore, vocabulary: Vocabulary, vectors: Any, encoder: Encoder | None) -> None:
        self.folder = folder
        self.manifest = manifest
        self.digests = digests
        self.store = store
        self.vocabulary = vocabulary
        self.vectors = vectors
        self.encoder = encoder
        self.pins = {row.pin_id: row for row in table.pins.values()}
        self.paths = table.image_paths
        self.pin_images: dict[str, list[int]] = {}
        for image_id, (pin_id, _) in sorted(digests.items()):
            self.pin_images.setdefault(pin_id, []).append(image_id)

    @classmethod
    def read(cls, folder: Path, encoder: Encoder | None) -> "_Current":
        manifest = read_manifest(folder)
        if manifest.encoder is not None:
            if encoder is None:
                raise InputError(f"index {folder} has CLIP vectors: changing it needs its encoder (load the index "
                                 "with its encoder, or pass --model/--pretrained for the same weights)")
            check_encoder(folder, manifest.encoder, encoder)
            vectors = read_vectors(folder / VECTORS_FILE)
        else:
            vectors = None
        table = read_table(folder / DATABASE_FILE)
        try:
            digests = read_digests(folder / DATABASE_FILE)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise IndexFormatError(f"index {folder}: {DATABASE_FILE} cannot be read ({exc}); rebuild it") from None
        store = LocalStore.load(folder / LOCAL_DIR, manifest.segments)
        vocabulary = read_vocabulary(folder / LOCAL_DIR, [segment.name for segment in manifest.segments],
                                     manifest.descriptors, manifest.config().vote)
        if set(store.image_ids.tolist()) != set(digests) or (vectors is not None and vectors.ntotal != len(digests)):
            raise IndexFormatError(f"index {folder} is inconsistent (its files disagree on the images); rebuild it")
        return cls(folder, manifest, digests, table, store, vocabulary, vectors, encoder)

    def plan_removal(self, pin_ids: Sequence[str]) -> _Plan:
        wanted = list(dict.fromkeys(pin_ids))
        if not wanted:
            raise InputError("name at least one pin id to remove")
        unknown = [pin_id for pin_id in wanted if pin_id not in self.pin_images]
        if unknown:
            raise InputError(f"not in index {self.folder}: {', '.join(unknown[:10])}"
                             + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "") + "; nothing removed")
        if len(wanted) == len(self.pin_images):
            raise InputError(f"removing every pin would leave index {self.folder} empty; delete the folder instead")
        plan = _Plan(drop_pins=wanted)
        for pin_id in wanted:
            plan.drop_images.update(self.pin_images[pin_id])
        return plan

    def plan_catalogue(self, catalogue: Catalogue, *, replace_pins: bool) -> _Plan:
        """``add``: new pins and new images of known pins. ``update``: also replace known pins' images and metadata."""
        plan = _Plan(skipped=list(catalogue.skipped))
        for pin in catalogue.pins:
            known = pin.pin_id in self.pin_images
            have = {self.digests[i][1]: i for i in self.pin_images.get(pin.pin_id, [])}
            listed: dict[str, Path] = {}
            for path in pin.images:
                digest = sha256_or_reason(path)
                if isinstance(digest, str):
                    plan.skipped.append((str(path), digest))
                    continue
                listed.setdefault(digest.hex(), path)
            if not known:
                plan.new_pins.add(pin.pin_id)
                plan.write_pins[pin.pin_id] = pin
            elif replace_pins and not self._same(pin, have, listed):
                plan.write_pins[pin.pin_id] = pin
                plan.replaced_images[pin.pin_id] = {i for digest, i in have.items() if digest not in listed}
            for digest, path in listed.items():
                if digest in have:
                    plan.unchanged += 1
                    if pin.pin_id in plan.write_pins:
                        plan.move_images.append((have[digest], path))
                else:
                    plan.add_paths.append((pin.pin_id, path, digest))
        return plan

    def _same(self, pin: PinRecord, have: dict[str, int], listed: dict[str, Path]) -> bool:
        """Whether the index already holds ``pin`` exactly: name, metadata, image contents and paths."""
        row = self.pins[pin.pin_id]
        return (row.name == pin.name and row.metadata == parse_json(dumps(pin.metadata, default=str))
                and set(have) == set(listed)
                and all(self.paths[have[digest]] == str(path.resolve()) for digest, path in listed.items()))

    # --------------------------------------------------------------------------------------------- commit
    def commit(self, action: str, plan: _Plan, added: _Added, options: BuildOptions, started: float
               ) -> ChangeReport:
        manifest = self.manifest
        gained = set(added.owners)
        skipped = list(plan.skipped)
        pins_added, pins_replaced = [], []
        for pin_id in list(plan.write_pins):
            if pin_id in plan.new_pins:
                if pin_id in gained:
                    pins_added.append(pin_id)
                else:
                    del plan.write_pins[pin_id]
                    skipped.append((pin_id, "pin left out: none of its images could be read"))
            else:
                old = plan.replaced_images.get(pin_id, set())
                keeps_some = len(old) < len(self.pin_images[pin_id])
                if old and not keeps_some and pin_id not in gained:
                    del plan.write_pins[pin_id]  # nothing readable would be left: keep the pin as it was
                    skipped.append((pin_id, "pin not updated: none of its new images could be read"))
                    continue
                plan.drop_images.update(old)
                pins_replaced.append(pin_id)
        drop_images = sorted(plan.drop_images)
        if not drop_images and not added.paths and not plan.write_pins and not plan.move_images:
            return ChangeReport(action, manifest.generation, unchanged=plan.unchanged, skipped=skipped,
                                seconds=time.perf_counter() - started)
        first_id = manifest.next_image_id
        new_ids = np.arange(first_id, first_id + len(added.paths), dtype=np.int64)
        live = frozenset(set(self.digests) - set(drop_images)) | frozenset(new_ids.tolist())
        report = ChangeReport(action, manifest.generation + 1, pins_added, pins_replaced, list(plan.drop_pins),
                              len(added.paths), len(drop_images), plan.unchanged, skipped,
                              time.perf_counter() - started)

        def write(staging: Path) -> None:
            shutil.copyfile(self.folder / DATABASE_FILE, staging / DATABASE_FILE)
            apply_table_change(staging / DATABASE_FILE, TableChange(
                drop_pins=plan.drop_pins, write_pins=list(plan.write_pins.values()), drop_images=drop_images,
                add_images=[(owner, int(image_id), path, digest) for owner, image_id, path, digest
                            in zip(added.owners, new_ids, added.paths, added.digests)],
                move_images=plan.move_images))
            vectors_entry_now = manifest.vectors
            if self.vectors is not None:
                vectors = self._changed_vectors(drop_images, added.vectors, new_ids)
                write_vectors(staging / VECTORS_FILE, vectors)
                requested = str((manifest.vectors or {}).get("requested", "auto"))
                vectors_entry_now = vectors_entry(spec_of(vectors, self._probes()), requested)
            (staging / LOCAL_DIR).mkdir()
            segments = self._carry_segments(staging / LOCAL_DIR, live)
            if len(new_ids):
                segments, merged = self._merge_small(staging / LOCAL_DIR, segments)
                number = max((int(s.name) for s in manifest.segments), default=-1) + 1
                first_row = self.store.next_row
                written = ([(image_id, self.store.entry(image_id)) for image_id in merged]
                           + list(zip(new_ids.tolist(), added.entries)))
                rows, descriptors = write_segment(staging / LOCAL_DIR / segment_name(number), written)
                segments.append(Segment(segment_name(number), first_row, rows))
                owners = np.repeat([image_id for image_id, _ in written], [len(e.features) for _, e in written])
                self._new_shard(staging, segments, descriptors, owners, len(live))
            stored = read_vocabulary(staging / LOCAL_DIR, [s.name for s in segments], None).ntotal
            counts = {"pins": len(set(self.pin_images) - set(plan.drop_pins)) + len(pins_added),
                      "images": len(live)}
            # a changed index is of today's format (its new segments are), whatever it was made as
            updated = replace(manifest, format_version=FORMAT_VERSION, generation=report.generation,
                              pins=counts["pins"], images=counts["images"],
                              vectors=vectors_entry_now,
                              next_image_id=first_id + len(new_ids),
                              local_features={**manifest.local_features, "descriptors": stored,
                                              "segments": [s.to_dict() for s in segments]},
                              changes=(manifest.changes + [report.log_entry()])[-MAX_CHANGES:])
            (staging / MANIFEST_FILE).write_bytes(updated.to_json())

        replace_directory_atomically(self.folder, write, is_replaceable=is_index_directory, locked=True)
        return replace(report, seconds=time.perf_counter() - started)

    def _probes(self) -> int | None:
        spec = (self.manifest.vectors or {}).get("index")
        return int(spec["probes"]) if isinstance(spec, dict) and spec.get("probes") else None

    def _changed_vectors(self, drop_images: list[int], vectors: np.ndarray | None, new_ids: np.ndarray) -> Any:
        """The CLIP vector index less the dropped images, plus the new ones; an exact index grown past
        the exact-search limit (with ``auto``) is rebuilt as the approximate kind its size calls for."""
        index = self.vectors
        index.remove_ids(np.asarray(drop_images, dtype=np.int64))
        if vectors is not None and len(new_ids):
            add_vectors(index, vectors, new_ids)
        requested = str((self.manifest.vectors or {}).get("requested", "auto"))
        wanted = choose_vector_index(int(index.ntotal), requested)
        if wanted.kind != "flat" and spec_of(index).kind == "flat":
            import faiss

            flat = faiss.downcast_index(index.index)
            every = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d).copy()
            index = vector_index(every, faiss.vector_to_array(index.id_map).astype(np.int64), requested)
        return index

    def _carry_segments(self, local: Path, live: frozenset[int]) -> list[Segment]:
        """Link the segments that keep live images (and their vocabulary shards) into the new generation;
        a segment that lost images gets new per-image tables; one with no live image left is dropped."""
        segments = []
        for segment in self.manifest.segments:
            source = self.folder / LOCAL_DIR / segment.name
            images = np.load(source / "images.npy", allow_pickle=False)
            held = [int(i) for i in images[:, 0]]
            if held and not any(i in live for i in held):
                continue  # only dead rows left: the segment goes
            target = local / segment.name
            copy_segment(source, target, keep=live)
            link_or_copy(source / SHARD_FILE, target / SHARD_FILE)  # removed rows are excluded at search time
            segments.append(segment)
        return segments

    def _merge_small(self, local: Path, segments: list[Segment]) -> tuple[list[Segment], list[int]]:
        """Keep the store at most ``MAX_SEGMENTS`` segments (each is one vocabulary shard to search): when a
        new one would pass that, every segment but the largest is folded into it. Returns the segments kept
        and the live images to write into the new segment (their features are copied, not extracted)."""
        if len(segments) + 1 <= MAX_SEGMENTS:
            return segments, []
        largest = max(segments, key=lambda segment: segment.rows)
        merged: list[int] = []
        for segment in segments:
            if segment is largest:
                continue
            images = np.load(local / segment.name / "images.npy", allow_pickle=False)
            merged.extend(sorted(int(i) for i in images[:, 0]))
            shutil.rmtree(local / segment.name)
        return [largest], merged

    def _new_shard(self, staging: Path, segments: list[Segment], descriptors: np.ndarray, row_images: np.ndarray,
                   images: int) -> None:
        """The new segment's shard (its rows within the vote's memory budget for ``images`` images in all);
        if the vocabulary outgrows exact search now, every shard is retrained once as an inverted file
        (the only change whose writing grows with the whole vocabulary)."""
        config = self.manifest.config().vote
        first_row = segments[-1].first_row
        voting = voting_rows(row_images, config, images)
        template = self.vocabulary.template()
        if template is None and self.vocabulary.ntotal + len(voting) > config.exact_search_max_descriptors:
            store = LocalStore.load(staging / LOCAL_DIR, segments[:-1])
            old_rows, old = store.live_descriptors()
            kept = voting_rows(store.row_image[old_rows], config, images)
            old_rows, old = old_rows[kept], old[kept]
            template = train_template(np.concatenate([old, descriptors[voting]]), config)
            for segment in segments[:-1]:
                mine = (old_rows >= segment.first_row) & (old_rows < segment.first_row + segment.rows)
                shard_path = staging / LOCAL_DIR / segment.name
                (shard_path / SHARD_FILE).unlink()
                write_shard(new_shard(old[mine], old_rows[mine], template), shard_path)
        write_shard(new_shard(descriptors[voting], first_row + voting, template),
                    staging / LOCAL_DIR / segments[-1].name)


def _prepare_images(plan: _Plan, current: _Current, encoder: Encoder | None, options: BuildOptions,
                    on_progress: Progress | None) -> _Added:
    """Encode and extract the plan's new images (only those), skipping and listing the unreadable."""
    paths = [path for _, path, _ in plan.add_paths]
    if not paths:
        return _Added([], [], [], None, [])
    if current.manifest.encoder is not None:
        assert encoder is not None
        encoded = encode_paths(paths, encoder, options, on_progress)
        plan.skipped.extend((str(paths[i]), reason) for i, reason in encoded.failures)
        ok = list(encoded.ok)
        vectors: np.ndarray | None = encoded.vectors
    else:
        ok, vectors = list(range(len(paths))), None
    entries, failures = reference_entries([paths[i] for i in ok], options, on_progress)
    plan.skipped.extend((str(paths[ok[i]]), reason) for i, reason in failures)
    kept = [i for i, entry in enumerate(entries) if entry is not None]
    chosen = [ok[i] for i in kept]
    return _Added([plan.add_paths[i][0] for i in chosen], [paths[i] for i in chosen],
                  [plan.add_paths[i][2] for i in chosen],
                  None if vectors is None else np.ascontiguousarray(vectors[kept]),
                  [entries[i] for i in kept])


def _check_apart(folder: Path, catalogue: Catalogue) -> None:
    source = catalogue.source.resolve()
    if source == folder or folder in source.parents:
        raise InputError(f"catalogue {catalogue.source} is inside the index {folder}")
    if not catalogue.pins:
        raise CatalogueError(f"catalogue {catalogue.source} lists no pins")


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link a file, or a folder's files recursively (copy where links are not possible)."""
    if source.is_dir():
        target.mkdir()
        for entry in source.iterdir():
            _link_tree(entry, target / entry.name)
        return
    link_or_copy(source, target)


__all__ = ["ChangeReport", "change_index", "check_index_target", "replace_manifest"]
