"""The CLIP vector index, chosen by size: exact (flat) for small catalogues, IVF with scalar-quantised
storage above that, all supporting ``add_with_ids`` and ``remove_ids`` so that the index can change in place.

Vectors are L2-normalised and compared by inner product; ids are arbitrary int64 (image ids, with gaps after
removals). The numbers below come from ``scripts/bench_ann.py`` (clustered synthetic unit vectors, 512 dims,
1000 queries, 2 cores shared with other jobs):

* Exact search (``ExactSearcher``, a matrix-vector product over every vector) is linear in the count: p50
  8.4 ms / p99 11 ms at 100k on a quiet machine (35-44 ms under a load of 3-4 other jobs), 17.5 / 20.6 ms at
  200k. Exact meets the p50 target of 5 ms up to about 60k, so ``EXACT_LIMIT`` is 50k; above it IVF answers
  (at 100k: 0.3 ms, recall@10 0.989 against exact). ``--index-type flat`` keeps a larger index exact.
* IVF lists: ``4 * sqrt(n)`` (4000 at 1 M, ~250 vectors a list), capped at ``MAX_LISTS`` = 8192 (reached at
  4.2 M): k-means costs sample x lists, and the sample grows with the lists (50 points a list), so training
  grows with lists squared: 150-220 s for 4000 lists at 1 M; 8192 would be ~4x that, near the 15 min budget.
* Storage fp16: SQ8 plateaued at recall@10 0.9785 at 1 M whatever the probes (8 to 64: its 8-bit ranges blur
  the near-ties between a query's 10th and 11th neighbour); fp16 gave 0.9989 at 8 probes, 0.9997 at 16.
  It costs 2 bytes a dimension: 992 MB on disk and 1051 MB reader RSS at 1 M x 512 (SQ8: 504 / 563 MB).
* Probes: 16 (p50 1.15 ms at 1 M): twice the smallest passing value, for margin; smaller indexes have fewer
  lists, so the same probes cover a larger share of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import IndexFormatError, InputError

VECTOR_INDEX_TYPES = ("auto", "flat", "ivf-sq8", "ivf-fp16")
_KINDS = ("flat", "ivf-sq8", "ivf-fp16")

EXACT_LIMIT = 50_000  # largest count searched exactly by "auto": exact p50 stays under 5 ms up to ~60k
AUTO_IVF_KIND = "ivf-fp16"  # storage "auto" picks above EXACT_LIMIT
MAX_LISTS = 8192
IVF_PROBES = 16
MIN_POINTS_PER_LIST = 39  # FAISS's k-means wants at least this many training points per centroid
TRAINING_POINTS_PER_LIST = 50  # sample size the caller should pass: lists x this (more is subsampled)
MIN_RANGE_SAMPLE = 1000  # fewer SQ8 training points than this: fixed unit-sphere ranges, not trained ones
_SEED = 1234


@dataclass(frozen=True)
class VectorIndexSpec:
    """What kind of vector index an index directory holds; stored whole in manifest.json ("vectors")."""

    kind: str
    lists: int = 0
    probes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lists": self.lists, "probes": self.probes}

    @classmethod
    def from_dict(cls, data: Any) -> "VectorIndexSpec":
        """The spec read back from a manifest, checked: a damaged manifest is an IndexFormatError, not a crash."""
        if not isinstance(data, dict):
            raise IndexFormatError(f"vector index description must be an object, not {type(data).__name__}")
        unknown = sorted(set(data) - {"kind", "lists", "probes"})
        if unknown:
            raise IndexFormatError(f"vector index description has unknown field(s): {', '.join(map(str, unknown))}")
        kind = data.get("kind")
        if kind not in _KINDS:
            raise IndexFormatError(f"vector index kind {kind!r} is not one of {', '.join(_KINDS)}")
        lists, probes = data.get("lists", 0), data.get("probes", 0)
        for name, value in (("lists", lists), ("probes", probes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise IndexFormatError(f"vector index {name} must be a non-negative integer, not {value!r}")
        if kind == "flat" and (lists or probes):
            raise IndexFormatError("a flat vector index has no lists or probes")
        if kind != "flat" and not (lists >= 1 and probes >= 1):
            raise IndexFormatError(f"an {kind} vector index needs lists >= 1 and probes >= 1, "
                                   f"not lists={lists}, probes={probes}")
        return cls(kind, lists, probes)


def ivf_lists(count: int) -> int:
    """About 4 * sqrt(count) lists, capped at MAX_LISTS, and never more than the count can train."""
    return max(1, min(MAX_LISTS, round(4 * math.sqrt(max(count, 1))), count // MIN_POINTS_PER_LIST))


def choose_vector_index(count: int, requested: str = "auto") -> VectorIndexSpec:
    """The vector index for ``count`` vectors: exact up to EXACT_LIMIT ("auto"), else IVF; or the forced kind."""
    if requested not in VECTOR_INDEX_TYPES:
        raise InputError(f"unknown vector index type {requested!r}; choose one of {', '.join(VECTOR_INDEX_TYPES)}")
    kind = requested
    if kind == "auto":
        kind = "flat" if count <= EXACT_LIMIT else AUTO_IVF_KIND
    if kind == "flat":
        return VectorIndexSpec("flat")
    lists = ivf_lists(count)
    return VectorIndexSpec(kind, lists, min(IVF_PROBES, lists))


def new_vector_index(spec: VectorIndexSpec, dim: int, training: np.ndarray | None) -> Any:
    """An empty index of ``spec``'s kind, trained on ``training`` (a sample of the vectors, IVF only).

    With fewer than 39 training points per list the IVF gets fewer lists (``training // 39``, at least 1; the
    result's ``nlist`` says how many: record ``spec_of(index)``), so a small catalogue never fails to build.
    With no training points at all it gets one list centred at the origin. SQ8 trained on fewer than
    MIN_RANGE_SAMPLE points gets per-dimension ranges that hold every unit vector's residual (coarser than
    trained ranges, but never clipping a vector added later). Training is seeded: the same sample gives the
    same index.
    """
    import faiss

    if spec.kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if spec.kind not in _KINDS:
        raise InputError(f"unknown vector index kind {spec.kind!r}")
    sample = np.zeros((0, dim), dtype=np.float32) if training is None else \
        np.ascontiguousarray(training, dtype=np.float32).reshape(-1, dim)
    limit = max(1, spec.lists) * TRAINING_POINTS_PER_LIST
    if len(sample) > limit:  # seeded subsample: training cost grows with the sample
        rows = np.sort(np.random.default_rng(_SEED).choice(len(sample), limit, replace=False))
        sample = sample[rows]
    lists = max(1, min(spec.lists, len(sample) // MIN_POINTS_PER_LIST))
    qtype = faiss.ScalarQuantizer.QT_8bit if spec.kind == "ivf-sq8" else faiss.ScalarQuantizer.QT_fp16
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, qtype, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True
    quantizer.this.disown()  # the IVF owns and frees its quantizer
    if lists == 1:  # one list, centred at the mean (FAISS's k-means warns below 39 points)
        centres = sample.mean(axis=0, keepdims=True) if len(sample) else np.zeros((1, dim), dtype=np.float32)
    else:
        centres = _spherical_kmeans(sample, lists)  # NumPy: FAISS's k-means BLAS is 5x slower here
    quantizer.add(np.ascontiguousarray(centres, dtype=np.float32))  # a trained quantizer: FAISS skips k-means
    if len(sample):  # the scalar quantizer's ranges, on the residuals (what IndexIVF.train does, in NumPy)
        residuals = np.ascontiguousarray(sample - centres[_nearest_centres(sample, centres)], dtype=np.float32)
        index.sq.train(residuals)
    if spec.kind == "ivf-sq8" and len(sample) < MIN_RANGE_SAMPLE:
        # A few residuals give per-dimension ranges far too narrow for the vectors added later (one gives
        # zero width: every code the same). Use the bounds every unit vector's residual keeps instead.
        centroids = faiss.rev_swig_ptr(quantizer.get_xb(), lists * dim).reshape(lists, dim)
        low, high = (-1.0 - centroids).min(axis=0), (1.0 - centroids).max(axis=0)
        faiss.copy_array_to_vector(np.r_[low, high - low].astype(np.float32), index.sq.trained)
    index.is_trained = True
    index.nprobe = max(1, min(spec.probes, lists))
    return index


def add_vectors(index: Any, vectors: np.ndarray, ids: np.ndarray) -> None:
    """``index.add_with_ids``, but for IVF with the list assignment done by NumPy: FAISS's own BLAS ran at
    about 4 GFLOP/s on the 2-core reference machine against NumPy's 20, which made adding 1 M vectors to 4000
    lists take 15 minutes instead of 3. Same result as ``add_with_ids`` (exact nearest centroid)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, int(index.d))
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != len(vectors):
        raise InputError(f"{len(vectors)} vectors but {len(ids)} ids")
    ivf = _ivf_of(index)
    if ivf is None or len(vectors) < 1000:
        index.add_with_ids(vectors, ids)
        return
    lists = _nearest_centres(vectors, _centroids(ivf))
    ivf.add_core(len(vectors), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists))


def spec_of(index: Any, probes: int | None = None) -> VectorIndexSpec:
    """The spec that describes ``index`` as built (lists after any fallback), for the manifest."""
    import faiss

    ivf = _ivf_of(index)
    if ivf is None:
        return VectorIndexSpec("flat")
    kind = "ivf-sq8" if ivf.sq.qtype == faiss.ScalarQuantizer.QT_8bit else "ivf-fp16"
    return VectorIndexSpec(kind, int(ivf.nlist), max(1, min(int(ivf.nprobe if probes is None else probes),
                                                            int(ivf.nlist))))


def apply_search_parameters(index: Any, spec: VectorIndexSpec) -> Any:
    """Set ``spec``'s probes on a freshly read index (FAISS does not always persist nprobe); check the kind."""
    actual = spec_of(index)
    if actual.kind != spec.kind:
        raise IndexFormatError(f"the vector file holds a {actual.kind} index but the manifest says {spec.kind}; "
                               "rebuild the index")
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.nprobe = max(1, min(spec.probes, int(ivf.nlist)))
    return index


class ApproximateSearcher:
    """IVF search with the same interface as ``ExactSearcher``: ``dim``, ``total``, ``search``.

    Unlike the exact searcher, ``search`` returns ``depth`` columns even when fewer vectors exist or the
    probed lists hold fewer: the missing ones have id -1 (and score -inf).
    """

    def __init__(self, index: Any) -> None:
        if _ivf_of(index) is None:
            raise IndexFormatError(f"approximate search needs an IVF index, not {type(index).__name__}")
        self.dim = int(index.d)
        self.total = int(index.ntotal)
        self._index = index

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, image ids), each (queries, depth), best first; ids -1 where there are fewer results."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if depth <= 0 or len(queries) == 0:
            return np.empty((len(queries), max(depth, 0)), np.float32), np.empty((len(queries), max(depth, 0)),
                                                                                  np.int64)
        scores, ids = self._index.search(queries, depth)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)


def make_searcher(index: Any, spec: VectorIndexSpec) -> Any:
    """The searcher for a read index: exact for flat, approximate (with ``spec``'s probes) for IVF."""
    apply_search_parameters(index, spec)
    if spec.kind == "flat":
        from .search import ExactSearcher

        return ExactSearcher(index)
    return ApproximateSearcher(index)


def _ivf_of(index: Any) -> Any:
    """The IVF scalar-quantizer index inside ``index``, or None for a flat one; IndexFormatError otherwise."""
    import faiss

    found = faiss.downcast_index(index)
    if isinstance(found, faiss.IndexIDMap2):
        inner = faiss.downcast_index(found.index)
        if isinstance(inner, faiss.IndexFlat):
            return None
    if isinstance(found, faiss.IndexIVFScalarQuantizer) and found.sq.qtype in (
            faiss.ScalarQuantizer.QT_8bit, faiss.ScalarQuantizer.QT_fp16):
        return found
    raise IndexFormatError(f"unsupported FAISS vector index type {type(found).__name__}")


def _centroids(ivf: Any) -> np.ndarray:
    import faiss

    flat = faiss.downcast_index(ivf.quantizer)
    return faiss.rev_swig_ptr(flat.get_xb(), int(ivf.nlist) * int(ivf.d)).reshape(int(ivf.nlist), int(ivf.d))


def _nearest_centres(vectors: np.ndarray, centres: np.ndarray, block: int = 8192) -> np.ndarray:
    """Index of the highest-inner-product centre per vector, in blocks that bound the score matrix."""
    found = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), block):
        found[start:start + block] = np.argmax(vectors[start:start + block] @ centres.T, axis=1)
    return found


def _spherical_kmeans(sample: np.ndarray, k: int, iterations: int = 10) -> np.ndarray:
    """Seeded k-means by inner product with unit-length centres (the vectors are unit length), in NumPy."""
    rng = np.random.default_rng(_SEED)
    centres = sample[rng.choice(len(sample), k, replace=False)].copy()
    for _ in range(iterations):
        labels = _nearest_centres(sample, centres)
        order = np.argsort(labels, kind="stable")
        present, starts = np.unique(labels[order], return_index=True)
        sums = np.add.reduceat(sample[order], starts, axis=0)
        centres[present] = sums
        empty = np.setdiff1d(np.arange(k), present)
        if len(empty):  # reseed an empty list with a random point
            centres[empty] = sample[rng.choice(len(sample), len(empty), replace=False)]
        norms = np.linalg.norm(centres, axis=1, keepdims=True)
        centres /= np.where(norms > 0, norms, 1)
    return centres.astype(np.float32)
