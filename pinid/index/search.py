"""CLIP search: exact inner product over the FAISS flat storage, and best-image-per-pin aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import IndexFormatError
from ..identify.pin_table import PinTable
from ..results import Match


class ExactSearcher:
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
        self.dim = int(index.d)
        self.total = int(index.ntotal)
        self._index = index  # keeps the memory behind the views alive
        matrix = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
        self._matrix = torch.from_numpy(matrix)
        self._ids = faiss.vector_to_array(index.id_map).astype(np.int64)

    @property
    def image_ids(self) -> np.ndarray:
        """The image id of every stored vector, in storage order."""
        return self._ids

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, image ids), each (queries, depth), best first."""
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


def search_pins(searcher: ExactSearcher, table: PinTable, vectors: np.ndarray, k: int) -> list[list[Match]]:
    """Top-``k`` pins per query vector, each pin at its best reference image (``Match.similarity``)."""
    queries = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, searcher.dim)
    if len(queries) == 0:
        return []
    depth = min(searcher.total, max(4 * k, k + 32))
    while True:
        scores, ids = searcher.search(queries, depth)
        ranked = [_best_per_pin(table, score_row, id_row, k) for score_row, id_row in zip(scores, ids)]
        if depth >= searcher.total or all(len(r) >= min(k, len(table.pins)) for r in ranked):
            return ranked
        depth = min(searcher.total, depth * 4)  # many images per pin: look deeper for k distinct pins


def _best_per_pin(table: PinTable, scores: np.ndarray, ids: np.ndarray, k: int) -> list[Match]:
    valid = ids >= 0
    scores, ids = scores[valid], ids[valid]
    pin_rows = table.pin_rows_of(ids)
    matches: list[Match] = []
    seen: set[int] = set()
    for score, image_id, pin_row in zip(scores, ids, pin_rows):  # already sorted by score
        if pin_row in seen:
            continue
        seen.add(int(pin_row))
        pin = table.pins[int(pin_row)]
        matches.append(Match(len(matches) + 1, pin.pin_id, pin.name, pin.metadata,
                             table.image_paths[int(image_id)], similarity=float(score)))
        if len(matches) == k:
            break
    return matches
