"""The ``local/`` arrays of an index: every reference image's features, read on demand, no pickle.

The store is a list of immutable *segments*, one per build or change that
added images, so that adding images writes only the new ones (the unchanged
segments are hard-linked into the next index generation). Layout of one
segment (``INDEX_DIR/local/NNNNNN``): ``descriptors.npy`` (n, 64) uint8 codes,
``keypoints.npy`` (n, 4) float16 x/y/size/angle, ``images.npy`` (live images, 4)
int64 (image id, first row, end row, position: rows local to the segment, and
the image's row in the next two), ``geometry.npy`` (images, 6) float32 (width,
height, pin box), ``colour.npy`` (images, 48, 48, 4) uint8 Lab thumbnail and pin
mask. Read with ``allow_pickle=False``.

Each segment owns a range of *global rows* (``first_row`` to ``first_row +
rows``, never reused): the ids the vote's vocabulary returns. Removing an
image rewrites only its segment's ``images.npy`` (32 bytes per image); its
features stay behind as dead rows that no live image refers to (and the vote
excludes), until the segment has no live image left (then it is dropped) or a
rebuild compacts the store.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import IndexFormatError
from .features import DESCRIPTOR_DIMS, THUMBNAIL_SIDE, Features, ReferenceEntry

_NAMES = ("descriptors", "keypoints", "images", "geometry", "colour")
_SHARED = ("descriptors", "keypoints", "geometry", "colour")  # written once, hard-linked ever after


@dataclass(frozen=True)
class Segment:
    """One segment as the manifest lists it: its folder under ``local/``, first global row and row count."""

    name: str
    first_row: int
    rows: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "first_row": self.first_row, "rows": self.rows}


class _File:
    """One ``.npy`` array of a segment, read with ``os.pread`` through a descriptor opened at load.

    Not memory-mapped: the vote and verification read scattered rows, and every
    mapped page they touch (with the kernel's read-ahead around it) stays
    counted in the process's RSS; at 100,000 images that grew to gigabytes.
    The descriptor keeps the file of the generation it was opened in.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"{path.name}: unknown .npy version {version}")
            if dtype.hasobject or fortran:
                raise ValueError(f"{path.name}: not a plain C-ordered array")
            self.offset = handle.tell()
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * dtype.itemsize
        expected = self.offset + self.shape[0] * self.row_bytes
        if os.path.getsize(path) != expected:
            raise ValueError(f"{path.name} is truncated or padded ({os.path.getsize(path)} bytes, not {expected})")
        self.descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, end: int) -> np.ndarray:
        data = os.pread(self.descriptor, (end - start) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(end - start, *self.shape[1:])

    def close(self) -> None:
        os.close(self.descriptor)


class _Part:
    """One loaded segment: its big arrays read on demand; in memory, its rows' keypoints in their pin's frame
    (for the vote) and its live images (sorted by first row)."""

    def __init__(self, folder: Path, base: int) -> None:
        self.files: list[_File] = []
        try:
            for name in ("descriptors", "keypoints", "colour"):
                self.files.append(_File(folder / f"{name}.npy"))
            images = np.load(folder / "images.npy", allow_pickle=False)
            geometry = np.load(folder / "geometry.npy", allow_pickle=False)
            keypoints = np.load(folder / "keypoints.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            self.close()
            raise IndexFormatError(f"local features are missing or damaged ({exc})") from None
        self.descriptors, self.keypoints, self.colour = self.files
        images = np.asarray(images, dtype=np.int64)
        rows = len(self.descriptors)
        if (len(self.descriptors.shape) != 2 or self.descriptors.shape[1] != DESCRIPTOR_DIMS
                or self.keypoints.shape != (rows, 4) or keypoints.shape != (rows, 4)
                or images.ndim != 2 or images.shape[1] != 4 or geometry.shape != (len(self.colour), 6)
                or self.colour.shape[1:] != (THUMBNAIL_SIDE, THUMBNAIL_SIDE, 4)
                or (len(images) and (images[:, 1].min() < 0 or images[:, 2].max() > rows
                                     or (images[:, 2] < images[:, 1]).any() or images[:, 3].min() < 0
                                     or images[:, 3].max() >= len(geometry)))):
            self.close()
            raise IndexFormatError("local feature arrays disagree in shape")
        order = np.argsort(images[:, 1], kind="stable")
        self.images = images[order, :3]
        self.positions = images[order, 3]  # row of geometry/colour for each image in self.images
        self.geometry = np.asarray(geometry, dtype=np.float32)
        self.vote_frame = _pin_frame(np.asarray(keypoints, dtype=np.float32), self.images,
                                     self.geometry[self.positions])
        self.row_owner = _row_owners(self.images, rows)
        self.base = base
        self.rows = rows

    def close(self) -> None:
        for file in self.files:
            file.close()
        self.files = []

    def image_of_rows(self, local_rows: np.ndarray) -> np.ndarray:
        """The image id owning each local row, -1 for a dead row (its image was removed)."""
        return self.row_owner[local_rows].astype(np.int64, copy=False)


def _row_owners(images: np.ndarray, rows: int) -> np.ndarray:
    """The image id owning each row, -1 where none does: one lookup per row for the vote, which asks for
    about 100,000 rows a photo (a search of the image table took 7 ms of the vote's 40).

    4 bytes a row while image ids fit (8 beyond)."""
    small = not len(images) or int(images[:, 0].max()) < np.iinfo(np.int32).max
    owners = np.full(rows, -1, np.int32 if small else np.int64)
    owned, slot = _owned_rows(images)
    owners[owned] = images[slot, 0]
    return owners


def _owned_rows(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row a live image owns, and that image's place in ``images`` (image id, first row, end row)."""
    counts = images[:, 2] - images[:, 1]
    rows = np.repeat(images[:, 1] - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
    return rows, np.repeat(np.arange(len(images)), counts)


def _pin_frame(keypoints: np.ndarray, images: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """Each row's keypoint in its pin's frame, as the vote needs it (8 bytes a row): position from the pin
    box's centre and size, both in units of the box's long side, and angle (rows no image owns stay 0)."""
    frame = np.zeros((len(keypoints), 4), np.float16)
    if not len(images):
        return frame
    width, height, x0, y0, x1, y1 = (np.asarray(column, np.float32) for column in geometry.T)
    no_box = (x1 <= x0) | (y1 <= y0)  # no pin box: the whole image is the pin
    x0, y0 = np.where(no_box, 0.0, x0), np.where(no_box, 0.0, y0)
    x1, y1 = np.where(no_box, width, x1), np.where(no_box, height, y1)
    long_side = np.maximum(np.maximum(x1 - x0, y1 - y0), 1.0)
    rows, owner = _owned_rows(images)  # and each row's image (its place in ``images``)
    points = keypoints[rows]
    frame[rows, 0] = (points[:, 0] - 0.5 * (x0 + x1)[owner]) / long_side[owner]
    frame[rows, 1] = (points[:, 1] - 0.5 * (y0 + y1)[owner]) / long_side[owner]
    frame[rows, 2] = points[:, 2] / long_side[owner]
    frame[rows, 3] = points[:, 3]
    return frame


class _Gathered:
    """A read-only view over all segments by global row (any index shape): the owning image of each row
    (``pick="image"``), or its keypoint as the vote needs it (``pick="vote"``: in its pin's frame, ``_pin_frame``)."""

    def __init__(self, parts: Sequence[_Part], pick: str) -> None:
        self._parts = parts
        self._pick = pick
        self._bases = np.array([part.base for part in parts], dtype=np.int64)
        self._total = max((part.base + part.rows for part in parts), default=0)
        self.shape: tuple[int, ...] = (self._total,) if pick == "image" else (self._total, 4)

    def __len__(self) -> int:
        return self._total

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        if len(self._parts) == 1 and self._parts[0].base == 0:  # most indexes: no need to sort rows by part
            part = self._parts[0]
            out = part.image_of_rows(flat) if self._pick == "image" else part.vote_frame[flat].astype(np.float32)
            return out.reshape(rows.shape) if self._pick == "image" else out.reshape(*rows.shape, 4)
        which = np.searchsorted(self._bases, flat, side="right") - 1
        if self._pick == "image":
            out = np.full(len(flat), -1, np.int64)
        else:
            out = np.zeros((len(flat), 4), np.float32)
        for number in np.unique(which):
            part = self._parts[int(number)]
            mask = which == number
            local = flat[mask] - part.base
            if self._pick == "image":
                out[mask] = part.image_of_rows(local)
            else:
                out[mask] = part.vote_frame[local]
        return out.reshape(rows.shape) if self._pick == "image" else out.reshape(*rows.shape, 4)


class LocalStore:
    """All live reference entries of an index, read on demand from its ``local/`` segments.

    ``vote_keypoints`` (in the pin's frame: position from the pin box's centre
    and size in units of its long side, and angle) and ``row_image`` are
    indexed by global row (what the vocabulary returns); ``row_image`` gives -1
    for a dead row. In memory: the per-image tables, and 8 bytes a row for the
    vote's keypoints and 4 for the image owning it; features and colours are read (``pread``) per entry.
    """

    def __init__(self, parts: list[_Part], segments: list[Segment]) -> None:
        self._parts = parts
        self.segments = segments
        self._rows: dict[int, tuple[int, int, int, int]] = {}  # image id -> (part, start, end, position)
        for number, part in enumerate(parts):
            for (image_id, start, end), position in zip(part.images.tolist(), part.positions.tolist()):
                if image_id in self._rows:
                    raise IndexFormatError(f"local features list image {image_id} twice")
                self._rows[image_id] = (number, start, end, position)
        self.image_ids = np.array(sorted(self._rows), dtype=np.int64)
        self.vote_keypoints = _Gathered(parts, "vote")
        self.row_image = _Gathered(parts, "image")
        weakref.finalize(self, _close_all, list(parts))

    @property
    def next_row(self) -> int:
        """The first global row after every segment: where a new segment starts."""
        return max((segment.first_row + segment.rows for segment in self.segments), default=0)

    @property
    def live_rows(self) -> int:
        return sum(end - start for _, start, end, _ in self._rows.values())

    def __contains__(self, image_id: int) -> bool:
        return int(image_id) in self._rows

    def entry(self, image_id: int) -> ReferenceEntry:
        number, start, end, position = self._rows[int(image_id)]
        part = self._parts[number]
        width, height, x0, y0, x1, y1 = (float(v) for v in part.geometry[position])
        features = Features(part.keypoints.rows(start, end).astype(np.float32), part.descriptors.rows(start, end),
                            int(width), int(height))
        return ReferenceEntry(features, (x0, y0, x1, y1), part.colour.rows(position, position + 1)[0])

    def keypoints(self, image_id: int) -> tuple[np.ndarray, int, float]:
        """One image's keypoints (n, 4) float32, the global row of the first (what the vote returns), and the
        image's long side in pixels."""
        number, start, end, position = self._rows[int(image_id)]
        part = self._parts[number]
        width, height = (float(v) for v in part.geometry[position][:2])
        return part.keypoints.rows(start, end).astype(np.float32), part.base + start, max(width, height)

    def feature_count(self, image_id: int) -> int:
        _, start, end, _ = self._rows[int(image_id)]
        return end - start

    def dead_rows(self) -> np.ndarray:
        """Global rows no live image owns (their images were removed): what the vote must not find."""
        chunks = []
        for part in self._parts:
            alive = np.zeros(part.rows, bool)
            for _, start, end in part.images.tolist():
                alive[start:end] = True
            chunks.append(np.flatnonzero(~alive).astype(np.int64) + part.base)
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)

    def live_descriptors(self) -> tuple[np.ndarray, np.ndarray]:
        """(global rows, descriptors) of every live image, in row order: what a vocabulary is built from."""
        rows, descriptors = [], []
        for part in self._parts:
            for _, start, end in part.images.tolist():
                rows.append(np.arange(part.base + start, part.base + end, dtype=np.int64))
                descriptors.append(part.descriptors.rows(start, end))
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, DESCRIPTOR_DIMS), np.uint8)
        return np.concatenate(rows), np.concatenate(descriptors)

    def thumbnails(self, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every live image's (ids, colour thumbnails (n, T, T, 4), geometry (n, 6)), ``chunk`` images at a
        time: what a whole-catalogue pass over the pins' colours reads (9 KB an image)."""
        for part in self._parts:
            for start in range(0, len(part.images), chunk):
                positions = part.positions[start:start + chunk]
                if not len(positions):
                    continue
                low, high = int(positions.min()), int(positions.max()) + 1
                colour = part.colour.rows(low, high)[positions - low]
                yield part.images[start:start + chunk, 0], colour, part.geometry[positions]

    @classmethod
    def load(cls, folder: Path, segments: Sequence[Segment]) -> "LocalStore":
        """Memory-map the listed segments of ``folder`` (an index's ``local/``) and check their shapes agree."""
        index_dir = folder.parent
        parts, end = [], 0
        for segment in segments:
            if segment.first_row < end:
                raise IndexFormatError(f"index {index_dir}: local segment {segment.name} overlaps the one "
                                       "before it; rebuild it")
            end = segment.first_row + segment.rows
            try:
                part = _Part(folder / segment.name, segment.first_row)
            except IndexFormatError as exc:
                raise IndexFormatError(f"index {index_dir}: segment {segment.name}: {exc}; rebuild it") from None
            parts.append(part)
            if part.rows != segment.rows:
                _close_all(parts)
                raise IndexFormatError(f"index {index_dir}: local segment {segment.name} holds "
                                       f"{part.rows} rows, the manifest says {segment.rows}; rebuild it")
        try:
            return cls(parts, list(segments))
        except IndexFormatError as exc:
            _close_all(parts)
            raise IndexFormatError(f"index {index_dir}: {exc}; rebuild it") from None


def _close_all(parts: Sequence[_Part]) -> None:
    for part in parts:
        part.close()


def segment_name(number: int) -> str:
    return f"{number:06d}"


def write_segment(folder: Path, entries: Iterable[tuple[int, ReferenceEntry]]) -> tuple[int, np.ndarray]:
    """Write (image_id, entry) pairs as one new segment folder; returns (rows, descriptors) for the vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptors, keypoints, images, geometry, colour = [], [], [], [], []
    row = 0
    for image_id, entry in entries:
        features = entry.features
        descriptors.append(features.descriptors)
        keypoints.append(features.keypoints)
        images.append((image_id, row, row + len(features), len(images)))
        geometry.append((features.width, features.height, *entry.pin_box))
        colour.append(entry.colour)
        row += len(features)
    all_descriptors = np.concatenate(descriptors) if descriptors else np.zeros((0, DESCRIPTOR_DIMS), np.uint8)
    np.save(folder / "descriptors.npy", all_descriptors)
    all_keypoints = np.concatenate(keypoints) if keypoints else np.zeros((0, 4), np.float32)
    np.save(folder / "keypoints.npy", all_keypoints.astype(np.float16))
    np.save(folder / "images.npy", np.array(images, dtype=np.int64).reshape(-1, 4))
    np.save(folder / "geometry.npy", np.array(geometry, dtype=np.float32).reshape(-1, 6))
    np.save(folder / "colour.npy", np.array(colour, dtype=np.uint8).reshape(-1, THUMBNAIL_SIDE, THUMBNAIL_SIDE, 4))
    return row, all_descriptors


def copy_segment(source: Path, target: Path, keep: frozenset[int] | None = None) -> None:
    """Carry a segment into a new generation: its arrays hard-linked (copied where links fail), and its
    ``images.npy`` linked too, or rewritten without the images not in ``keep``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in _SHARED:
        link_or_copy(source / f"{name}.npy", target / f"{name}.npy")
    images = np.load(source / "images.npy", allow_pickle=False)
    if keep is None or all(int(i) in keep for i in images[:, 0]):
        link_or_copy(source / "images.npy", target / "images.npy")
        return
    np.save(target / "images.npy", images[np.array([int(i) in keep for i in images[:, 0]], dtype=bool)])


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links: copy (the change then writes the whole store)
        import shutil

        shutil.copyfile(source, target)


def write_local_store(folder: Path, entries: Iterable[tuple[int, ReferenceEntry]]) -> np.ndarray:
    """A whole store as one segment (``folder/000000``); returns the descriptors. For tests and tools."""
    _, descriptors = write_segment(folder / segment_name(0), entries)
    return descriptors


__all__ = ["LocalStore", "Segment", "copy_segment", "link_or_copy", "segment_name", "write_local_store",
           "write_segment"]
