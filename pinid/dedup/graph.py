"""Candidate pairs and guarded grouping over many items, without an N x N matrix.

Dense similarity matrices are what make other dedup tools run out of memory
at 60k images (imagededup #95, #133, #191). Here candidate pairs come from a
FAISS k-nearest-neighbour search run in query batches (exact below
``EXACT_LIMIT`` items, IVF above) plus a banded lookup of the photo hashes
(crop windows; ring hashes for turned copies), so memory grows with
``n * k``. Groups are then made by union-find with a guard against chaining
(fastdup #302): two groups merge only if every member of the smaller one is
itself related to the larger group's representative, so A~B and B~C never
pull an unrelated C in with A.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..encoder.cache import Progress
from ..phash import CROP, MAX_RING_DISTANCE, RING_QUERIES, RINGS, hamming

EXACT_LIMIT = 20_000  # exact search below this many items; IVF (approximate, recall ~0.99+) above
QUERY_BATCH = 4096
_BANDS = 4  # a 64-bit hash in four 16-bit bands: two hashes within 3 bits share one band for sure
_BUCKET_CAP = 32  # a band value shared by more items than this says nothing (flat, blank photos)


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs ``left < right`` (item positions) with their cosine similarity."""

    left: np.ndarray  # int64
    right: np.ndarray  # int64
    score: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.left)


def knn_pairs(vectors: np.ndarray, k: int, min_score: float, *, seed: int = 0,
              on_progress: Progress | None = None) -> Pairs:
    """Pairs of each item with its ``k`` nearest neighbours scoring at least ``min_score``.

    ``on_progress("neighbours", done, n)`` is called after each query batch.
    """
    import faiss

    n, dim = vectors.shape
    if n < 2:
        return _empty_pairs()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    depth = min(k + 1, n)
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = 10  # coarse cells only need to be roughly right: neighbours are re-scored exactly
        sample = np.random.default_rng(seed).choice(n, size=min(n, nlist * 40), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = 16
    index.add(vectors)
    lefts, rights, scores = [], [], []
    for start in range(0, n, QUERY_BATCH):
        block_scores, block_ids = index.search(vectors[start:start + QUERY_BATCH], depth)
        rows = np.repeat(np.arange(start, start + len(block_ids), dtype=np.int64), depth)
        ids, sims = block_ids.reshape(-1), block_scores.reshape(-1)
        keep = (ids >= 0) & (ids != rows) & (sims >= min_score)
        lefts.append(np.minimum(rows[keep], ids[keep]))
        rights.append(np.maximum(rows[keep], ids[keep]))
        scores.append(sims[keep])
        if on_progress is not None:
            on_progress("neighbours", start + len(block_ids), n)
    return _unique_pairs(np.concatenate(lefts), np.concatenate(rights), np.concatenate(scores))


def hash_pairs(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs whose photo hashes share a 16-bit band (rows laid out as in pinid.phash).

    Two lookups: the whole-image DCT hash against the other's crop windows
    (``CROP``: re-uploads, crops), and the largest ring hashes against the
    other's ring hashes (``RINGS``: turned by any angle, mirrored), keeping
    only ring matches within ``MAX_RING_DISTANCE`` bits (ring hashes share
    bands by chance more often). Returns ``(left, right)`` with
    ``left < right``; the caller measures the real distances.
    """
    n = len(hashes)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rings = hashes[:, RINGS]
    left, right = zip(banded_pairs(hashes[:, :1], hashes[:, CROP]),
                      banded_pairs(rings[:, :RING_QUERIES], rings, max_distance=MAX_RING_DISTANCE))
    key = np.unique(np.concatenate(left) * n + np.concatenate(right))
    return key // n, key % n


def banded_pairs(queries: np.ndarray, windows: np.ndarray,
                 max_distance: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs where some query hash of one item equals some window hash of another in one 16-bit band
    (and, with ``max_distance``, is within that many bits of it).

    ``queries`` is ``(n, q)`` and ``windows`` ``(n, w)`` uint64, row = item. A
    banded exact lookup (sort + searchsorted), linear in ``n * (q + w)``: it
    finds near-identical re-uploads even when the embedding neighbours miss
    them. Returns unique ``(left, right)`` with ``left < right``.
    """
    n = len(queries)
    windows = np.ascontiguousarray(windows, dtype=np.uint64)
    flat_windows = windows.reshape(-1)
    owners = np.repeat(np.arange(n, dtype=np.int64), windows.shape[1])
    flat_queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1)
    askers = np.repeat(np.arange(n, dtype=np.int64), queries.shape[1])
    lefts, rights = [], []
    for band in range(_BANDS):
        shift = np.uint64(16 * band)
        band_windows = (flat_windows >> shift) & np.uint64(0xFFFF)
        order = np.argsort(band_windows, kind="stable")
        sorted_values, sorted_owners, sorted_windows = band_windows[order], owners[order], flat_windows[order]
        band_queries = (flat_queries >> shift) & np.uint64(0xFFFF)
        low = np.searchsorted(sorted_values, band_queries, side="left")
        high = np.searchsorted(sorted_values, band_queries, side="right")
        counts = np.where(high - low <= _BUCKET_CAP, high - low, 0)
        query_of = np.repeat(askers, counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        found = np.repeat(low, counts) + offsets
        other = sorted_owners[found]
        keep = other != query_of
        if max_distance is not None:
            keep &= hamming(np.repeat(flat_queries, counts), sorted_windows[found]) <= max_distance
        lefts.append(np.minimum(query_of[keep], other[keep]))
        rights.append(np.maximum(query_of[keep], other[keep]))
    key = np.unique(np.concatenate(lefts) * max(n, 1) + np.concatenate(rights))
    return key // max(n, 1), key % max(n, 1)


def cosine(vectors: np.ndarray, left: np.ndarray, right: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """Row-wise cosine of unit vectors for index pairs, in batches (bounded memory)."""
    out = np.empty(len(left), dtype=np.float32)
    for start in range(0, len(left), batch):
        a = vectors[left[start:start + batch]]
        b = vectors[right[start:start + batch]]
        out[start:start + batch] = np.einsum("ij,ij->i", a, b)
    return out


# ------------------------------------------------------------------ grouping
#: ``related(members, representative) -> bool array``: may these members join that representative's group?
Related = Callable[[np.ndarray, int], np.ndarray]


def guarded_groups(n: int, left: np.ndarray, right: np.ndarray, related: Related) -> np.ndarray:
    """Union-find over accepted pairs, strongest first; returns each item's representative.

    Pairs must come sorted, strongest first. When two groups meet, the larger
    keeps its representative (ties: the earlier item) and the smaller joins
    only if ``related`` accepts every one of its members against that
    representative; otherwise the pair is skipped. Each item is checked
    O(log n) times (small joins large), so the cost stays near-linear.
    """
    parent = np.arange(n, dtype=np.int64)
    members: dict[int, list[int]] = {}
    refused: set[tuple[int, int]] = set()

    def find(item: int) -> int:
        root = item
        while parent[root] != root:
            root = int(parent[root])
        while parent[item] != root:  # path compression
            parent[item], item = root, int(parent[item])
        return root

    for a, b in zip(left.tolist(), right.tolist()):
        root_a, root_b = find(a), find(b)
        if root_a == root_b:
            continue
        group_a, group_b = members.get(root_a, [root_a]), members.get(root_b, [root_b])
        if (len(group_a), -root_a) < (len(group_b), -root_b):
            root_a, root_b, group_a, group_b = root_b, root_a, group_b, group_a
        key = (root_a, root_b)  # root_a keeps its representative
        if key in refused:
            continue
        if not bool(np.all(related(np.asarray(group_b, dtype=np.int64), root_a))):
            refused.add(key)
            continue
        parent[root_b] = root_a
        group_a.extend(group_b)
        members[root_a] = group_a
        members.pop(root_b, None)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def _unique_pairs(left: np.ndarray, right: np.ndarray, score: np.ndarray) -> Pairs:
    if len(left) == 0:
        return _empty_pairs()
    order = np.lexsort((right, left))
    left, right, score = left[order], right[order], score[order]
    first = np.ones(len(left), dtype=bool)
    first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
    return Pairs(left[first], right[first], score[first].astype(np.float32))


def _empty_pairs() -> Pairs:
    return Pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))

