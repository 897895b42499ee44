"""The daily check: which new listings are new, and which duplicate something already held.

``pinid dedup --against INDEX_DIR NEW_LISTINGS`` matches each new listing to
its nearest image in an existing index (a pin catalogue, or previous listings
indexed with ``pinid build-index``) and applies the same rules as grouping:
same file, same photo (photo hash of the matched reference image), same pin
(cosine, or the verifier when one is plugged in).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..encoder.cache import (EmbeddingCache, EmbedOptions, ImageEncoder, Progress, embed_files, prepare,
                             sha256_or_reason)
from ..errors import InputError, LocalOnlyError
from ..index import PinIndex
from ..phash import photo_distance
from ..results import Match
from .group import DedupOptions
from .listings import Listing
from .photo_match import PhotoConfirmer
from .rows import ResultRow, RowsReport

AGAINST_FIELDS = ["listing_id", "image", "status", "reason", "match_pin_id", "match_image", "score",
                  "phash_distance", "error"]


@dataclass(frozen=True)
class AgainstRow(ResultRow):
    """A new listing's verdict: ``new``, ``duplicate`` (of ``match_*``, because ``reason``) or ``unreadable``."""

    listing_id: str
    image: str
    status: str
    reason: str
    match_pin_id: str
    match_image: str
    score: float | None
    phash_distance: int | None
    error: str = ""


@dataclass
class AgainstReport(RowsReport):
    rows: list[AgainstRow]

    def summary(self) -> str:
        s = self.stats
        return (f"{s['listings']} new listings: {s['duplicate']} duplicates, {s['new']} new, "
                f"{s['unreadable']} unreadable; encoded {self.encoded}, from cache {self.cached}; "
                f"{self.seconds:.1f} s")


def against_encoder(index: PinIndex) -> ImageEncoder:
    """The encoder that listings must be embedded with to be matched against ``index``.

    Raises:
        LocalOnlyError: the index has local features only (``--encoder local``): it has no
            CLIP vectors to match listings against.
        InputError: the index was loaded without its encoder (``PinIndex.load(..., encoder=None)``).
    """
    if not index.has_vectors:
        raise LocalOnlyError(f"index {index.path} has local features only (built with --encoder local): "
                             "dedup --against needs an index built with CLIP embeddings (--encoder clip)")
    if index.encoder is None:
        raise InputError(f"index {index.path} was loaded without its encoder; load it with encoder='manifest'")
    return index.encoder


def match_against(index: PinIndex, listings: Sequence[Listing], cache: EmbeddingCache,
                  options: DedupOptions = DedupOptions(), embed_options: EmbedOptions = EmbedOptions(),
                  on_progress: Progress | None = None) -> AgainstReport:
    """Match ``listings`` against ``index`` (loaded with its encoder); one row per listing.

    Raises:
        LocalOnlyError: the index has local features only (see :func:`against_encoder`).
    """
    started = time.perf_counter()
    encoder = against_encoder(index)
    embedded = embed_files([listing.image for listing in listings], encoder, cache, embed_options, on_progress)
    best = [matches[0] if matches else None for matches in index.search(embedded.vectors, k=1)]
    references = _ReferenceHashes(int(getattr(encoder, "image_size", 224)))
    confirm = PhotoConfirmer()
    rows: list[AgainstRow] = []
    for position, listing in enumerate(listings):
        row = int(embedded.content_of[position])
        if row < 0:
            rows.append(AgainstRow(listing.listing_id, str(listing.image), "unreadable", "", "", "", None, None,
                                   embedded.failures.get(position, "unreadable")))
            continue
        match = best[row]
        if match is None:
            rows.append(AgainstRow(listing.listing_id, str(listing.image), "new", "", "", "", None, None))
            continue
        similarity = _cosine(match)
        digest, hashes = references.get(Path(match.reference_image))
        distance = None if hashes is None else int(photo_distance(embedded.hashes[row], hashes)[0])
        same_hash = distance is not None and distance <= options.max_phash_distance
        if same_hash and options.confirm_photos and similarity < options.photo_min_cosine:
            same_hash = confirm(("listing", row), listing.image, ("reference", match.reference_image),
                                Path(match.reference_image))
        reason = _reason(options, listing, match, similarity, embedded.digests[row] == digest, same_hash)
        rows.append(AgainstRow(listing.listing_id, str(listing.image), "duplicate" if reason else "new", reason,
                               match.pin_id, match.reference_image, similarity, distance))
    stats = {"listings": len(rows), **{s: sum(1 for r in rows if r.status == s)
                                       for s in ("duplicate", "new", "unreadable")}}
    return AgainstReport(rows, embedded.encoded, embedded.cached, time.perf_counter() - started, stats)


def _cosine(match: Match) -> float:
    """The CLIP cosine of a search match (``index.search`` always sets it)."""
    return float(match.similarity) if match.similarity is not None else -1.0


def _reason(options: DedupOptions, listing: Listing, match: Match, similarity: float, same_file: bool,
            same_hash: bool) -> str:
    if same_file:
        return "exact_file"
    if same_hash or similarity >= options.photo_min_cosine:
        return "same_photo"
    if options.mode == "pin":
        if options.verifier is None:
            return "same_pin" if similarity >= options.pin_min_cosine else ""
        other = Listing(match.pin_id, Path(match.reference_image))
        if similarity >= options.verify_floor and options.verifier(listing, other, similarity):
            return "same_pin"
    return ""


class _ReferenceHashes:
    """sha256 and photo hashes of reference images, each read once (many listings share one)."""

    def __init__(self, image_size: int) -> None:
        self._image_size = image_size
        self._known: dict[Path, tuple[bytes | None, np.ndarray | None]] = {}

    def get(self, path: Path) -> tuple[bytes | None, np.ndarray | None]:
        if path not in self._known:
            digest = sha256_or_reason(path)
            if isinstance(digest, str):  # moved or unreadable: decide by embedding alone
                self._known[path] = (None, None)
            else:
                prepared = prepare(path, digest, self._image_size)
                self._known[path] = (digest, None if isinstance(prepared, str) else prepared[1])
        return self._known[path]
