"""Group duplicate listings: re-uploads of one photo (``photo``) or listings of one pin (``pin``).

Flow: hash every file (sha256) -> encode only contents the cache lacks, in
atomic chunks -> candidate pairs from FAISS neighbours and banded photo
hashes -> keep pairs that are related -> guarded union-find -> one row per
listing saying which group, which representative, how close, and why.

Related, for a listing and a representative:

* ``exact_file``: the same bytes (collapsed before any model work);
* ``same_photo``: photo-hash distance <= ``max_phash_distance`` (crop
  tolerant, encoder independent) or ring-hash distance <= ``MAX_RING_DISTANCE``
  (turned by any angle, mirrored), confirmed geometrically, or embedding
  cosine >= the photo mode's ``min_cosine``;
* ``same_pin`` (``pin`` mode only): cosine >= ``min_cosine``, or, when a
  ``verifier`` is plugged in, cosine >= ``verify_floor`` and the verifier
  confirms: any ``(listing, other, cosine) -> bool`` works (the hook for
  geometric verification).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from ..encoder.cache import EmbeddingCache, EmbedOptions, Embedded, ImageEncoder, Progress, embed_files
from ..errors import InputError
from ..phash import MAX_RING_DISTANCE, photo_distance, ring_distance
from .graph import Pairs, cosine, guarded_groups, hash_pairs, knn_pairs
from .listings import Listing
from .photo_match import PhotoConfirmer
from .rows import ResultRow, RowsReport

Mode = Literal["photo", "pin"]
#: Default minimum cosines meant for the default encoder (ViT-B-32-256 / datacomp). They
#: are estimates, not yet measured: its weights cannot be downloaded where pinid is built.
#: Other encoders need their own (``--threshold``); random test weights need pHash only.
PHOTO_MIN_COSINE = 0.97
PIN_MIN_COSINE = 0.90
#: Photo-hash bits (of 64) within which a pair is a "same photo" candidate; candidates are
#: then confirmed geometrically (pinid.photo_match), which lets the hash be loose enough for
#: heavy crops. Hash only, on the small benchmark: 8 -> recall 0.68, 12 -> 0.76, precision 1.0;
#: on the full benchmark 12 gives precision 0.965, recall 0.850 (8: 0.979, 0.682).
MAX_PHASH_DISTANCE = 12

#: ``(listing, other, cosine) -> True`` to confirm that both show the same pin.
Verifier = Callable[["Listing", "Listing", float], bool]


@dataclass(frozen=True)
class DedupOptions:
    """How strict grouping is.

    ``min_cosine`` (CLI ``--threshold``): the embedding cosine at or above which two
    listings are related; ``None`` takes the mode's default, 1 relies on the photo
    hash alone. ``max_phash_distance`` (CLI ``--phash-distance``): photo-hash bits
    (of 64) at or below which two images are candidates for the same photo.
    """

    mode: Mode = "photo"
    min_cosine: float | None = None
    max_phash_distance: int = MAX_PHASH_DISTANCE
    neighbours: int = 16
    verifier: Verifier | None = None
    verify_floor: float = 0.75
    #: confirm photo-hash matches with ORB features under one similarity transform
    #: (pinid.photo_match): the hash alone merges different pins shot on similar desks
    confirm_photos: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("photo", "pin"):
            raise InputError(f"mode must be 'photo' or 'pin', not {self.mode!r}")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise InputError(f"threshold {self.min_cosine} is not a cosine similarity in [-1, 1]")
        if not 0 <= self.max_phash_distance <= 64:
            raise InputError("phash distance must be between 0 and 64 bits")
        if self.neighbours < 1:
            raise InputError("neighbours must be at least 1")

    @property
    def photo_min_cosine(self) -> float:
        """The cosine at or above which two listings are the same photo."""
        if self.min_cosine is None:
            return PHOTO_MIN_COSINE
        # pin mode: "same photo" by cosine is never looser than "same pin" (1 = hash only)
        return self.min_cosine if self.mode == "photo" else max(self.min_cosine, PHOTO_MIN_COSINE)

    @property
    def pin_min_cosine(self) -> float:
        """The cosine at or above which two listings show the same pin (``pin`` mode)."""
        return self.min_cosine if self.min_cosine is not None else PIN_MIN_COSINE


# ------------------------------------------------------------------ grouping
@dataclass(frozen=True)
class GroupRow(ResultRow):
    """One listing's place: its group, the group's representative, how close, and why."""

    listing_id: str
    image: str
    group_id: str
    group_size: int
    representative: str
    score: float | None  # cosine to the representative's image
    phash_distance: int | None
    reason: str  # representative | unique | exact_file | same_photo | same_pin | unreadable
    error: str = ""


@dataclass
class DedupReport(RowsReport):
    rows: list[GroupRow]

    def summary(self) -> str:
        s = self.stats
        return (f"{s['listings']} listings: {s['groups']} duplicate groups covering {s['grouped']} listings "
                f"({s['duplicates']} duplicates), {s['unique']} unique, {s['unreadable']} unreadable; "
                f"encoded {self.encoded}, from cache {self.cached}; {self.seconds:.1f} s")


class _Relation:
    """Decides, for content rows, whether a member may sit with a representative, and why."""

    def __init__(self, embedded: Embedded, listings: Sequence[Listing], options: DedupOptions) -> None:
        self.vectors, self.hashes, self.options = embedded.vectors, embedded.hashes, options
        self._confirm = PhotoConfirmer() if options.confirm_photos else None
        first: dict[int, int] = {}
        for position, row in enumerate(embedded.content_of.tolist()):
            if row >= 0:
                first.setdefault(row, position)
        self._listing = {row: listings[position] for row, position in first.items()}

    def reasons(self, left: np.ndarray, right: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """0 unrelated, 1 same photo, 2 same pin, per pair (batched: bounded memory)."""
        out = self.same_photo(left, right, scores).astype(np.int8)
        if self.options.mode == "pin" and self.options.verifier is None:
            out[(out == 0) & (scores >= self.options.pin_min_cosine)] = 2
        elif self.options.mode == "pin":  # only pairs above the floor meet the (costly) verifier
            for i in np.flatnonzero((out == 0) & (scores >= self.options.verify_floor)).tolist():
                if self._verified(int(left[i]), int(right[i]), float(scores[i])):
                    out[i] = 2
        return out

    def same_photo(self, left: np.ndarray, right: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = np.zeros(len(left), dtype=bool)
        for start in range(0, len(left), 65_536):
            part = slice(start, start + 65_536)
            distance = photo_distance(self.hashes[left[part]], self.hashes[right[part]])
            turned = ring_distance(self.hashes[left[part]], self.hashes[right[part]])  # any angle, mirrored
            out[part] = ((distance <= self.options.max_phash_distance) | (turned <= MAX_RING_DISTANCE)
                         | (scores[part] >= self.options.photo_min_cosine))
        if self._confirm is not None:  # hash-only matches must also line up geometrically
            for i in np.flatnonzero(out & (scores < self.options.photo_min_cosine)).tolist():
                a, b = int(left[i]), int(right[i])
                out[i] = self._confirm(a, self._listing[a].image, b, self._listing[b].image)
        return out

    def related(self, members: np.ndarray, representative: int) -> np.ndarray:
        scores = self.vectors[members] @ self.vectors[representative]
        return self.reasons(members, np.full(len(members), representative), scores) > 0

    def _verified(self, a: int, b: int, score: float) -> bool:
        assert self.options.verifier is not None
        return bool(self.options.verifier(self._listing[a], self._listing[b], score))


def find_groups(listings: Sequence[Listing], embedded: Embedded, options: DedupOptions = DedupOptions(),
                on_progress: Progress | None = None,
                candidates: tuple[np.ndarray, np.ndarray] | None = None) -> list[GroupRow]:
    """Group listings (see the module docstring for the rules); one row per listing, input order.

    ``candidates``: more pairs ``(left, right)`` of content rows to consider besides the embedding
    neighbours and photo hashes (``--encoder local``: the local-feature vote, pinid.dedup.local_pairs).
    Vectors with no dimensions (no model) give no neighbours and cosine 0 everywhere.
    """
    count = len(embedded.digests)
    relation = _Relation(embedded, listings, options)
    none = np.empty(0, np.int64)
    knn = (knn_pairs(embedded.vectors, options.neighbours, -1.0, on_progress=on_progress)
           if embedded.vectors.shape[1] else Pairs(none, none, np.empty(0, np.float32)))
    hash_left, hash_right = hash_pairs(embedded.hashes)
    width = max(count, 1)
    proposed = hash_left * width + hash_right
    if candidates is not None:
        proposed = np.union1d(proposed, np.minimum(*candidates) * width + np.maximum(*candidates))
    extra = np.setdiff1d(proposed, knn.left * width + knn.right)  # both sorted, unique
    left = np.concatenate([knn.left, extra // width])
    right = np.concatenate([knn.right, extra % width])
    scores = np.concatenate([knn.score, cosine(embedded.vectors, extra // width, extra % width)])
    kinds = relation.reasons(left, right, scores)
    keep = kinds > 0
    left, right, scores, kinds = left[keep], right[keep], scores[keep], kinds[keep]
    order = np.lexsort((-scores, kinds))  # same photo first, then strongest cosine
    representative = guarded_groups(count, left[order], right[order], relation.related)
    if on_progress is not None:
        on_progress("grouping", count, count)
    return _rows(listings, embedded, representative, relation)


def _rows(listings: Sequence[Listing], embedded: Embedded, representative: np.ndarray,
          relation: _Relation) -> list[GroupRow]:
    content_of = embedded.content_of
    ok = content_of >= 0
    rep_content = np.full(len(listings), -1, dtype=np.int64)
    rep_content[ok] = representative[content_of[ok]]
    sizes = np.bincount(rep_content[ok], minlength=len(embedded.digests))
    rep_listing: dict[int, int] = {}
    for position in np.flatnonzero(ok).tolist():  # a group's representative listing: its first with that content
        if content_of[position] == rep_content[position]:
            rep_listing.setdefault(int(rep_content[position]), position)
    group_ids: dict[int, str] = {}
    rows: list[GroupRow] = []
    mine = np.flatnonzero(ok)
    scores = np.ones(len(listings), dtype=np.float32)
    distances = np.zeros(len(listings), dtype=np.int64)
    if len(mine):
        scores[mine] = cosine(embedded.vectors, content_of[mine], rep_content[mine])
        distances[mine] = photo_distance(embedded.hashes[content_of[mine]], embedded.hashes[rep_content[mine]])
    photo = np.zeros(len(listings), dtype=bool)
    photo[mine] = relation.same_photo(content_of[mine], rep_content[mine], scores[mine])
    for position, listing in enumerate(listings):
        if not ok[position]:
            rows.append(GroupRow(listing.listing_id, str(listing.image), "", 0, "", None, None, "unreadable",
                                 embedded.failures.get(position, "unreadable")))
            continue
        rep = int(rep_content[position])
        size = int(sizes[rep])
        group_id = group_ids.setdefault(rep, f"g{len(group_ids) + 1:06d}")
        rep_position = rep_listing[rep]
        if position == rep_position:
            reason = "representative" if size > 1 else "unique"
        elif content_of[position] == rep:
            reason = "exact_file"
        elif photo[position]:
            reason = "same_photo"
        else:
            reason = "same_pin"
        score = 1.0 if content_of[position] == rep else float(scores[position])
        if not embedded.vectors.shape[1]:
            score = None  # no model, no cosine
        rows.append(GroupRow(listing.listing_id, str(listing.image), group_id, size,
                             listings[rep_position].listing_id, score, int(distances[position]), reason))
    return rows


def group_stats(rows: Sequence[GroupRow]) -> dict[str, int]:
    readable = [row for row in rows if row.reason != "unreadable"]
    grouped = [row for row in readable if row.group_size > 1]
    return {"listings": len(rows), "unreadable": len(rows) - len(readable),
            "groups": len({row.group_id for row in grouped}), "grouped": len(grouped),
            "duplicates": sum(1 for row in grouped if row.reason != "representative"),
            "unique": len(readable) - len(grouped)}


def dedup(listings: Sequence[Listing], encoder: ImageEncoder, cache: EmbeddingCache,
          options: DedupOptions = DedupOptions(), embed_options: EmbedOptions = EmbedOptions(),
          on_progress: Progress | None = None, digests: Sequence[bytes | str] | None = None) -> DedupReport:
    """Embed (incrementally) and group ``listings``; the whole `pinid dedup` job.

    ``digests``: each listing image's sha256 when already known (``embed_files``).
    """
    started = time.perf_counter()
    embedded = embed_files([listing.image for listing in listings], encoder, cache, embed_options, on_progress,
                           digests=digests)
    rows = find_groups(listings, embedded, options, on_progress)
    return DedupReport(rows, embedded.encoded, embedded.cached, time.perf_counter() - started, group_stats(rows))

