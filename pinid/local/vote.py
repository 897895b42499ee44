"""The weight-free candidate stage: nearest reference descriptors vote for their images.

Every query descriptor looks up its ``neighbours_per_descriptor`` nearest reference
descriptors in one FAISS index over all reference images and votes at most
once per image, for its nearest neighbour there, with weight ``1 - d / d_next``
(``d_next``: distance of the nearest neighbour in the next other image, a
ratio test across images). Descriptors shared by many images (plain enamel
edges) thus vote little, distinctive ones a lot. Votes must also agree on the
rotation and scale change (weak geometric consistency).

Measured on 100 single-pin photos of the full benchmark (2,295 pins):
true pin in the top 50 for 0.34 of photos with plain votes, 0.36 with the
geometric check (top 1: 0.17 -> 0.23); 16 to 64 neighbours and 16 to 48
probed lists made no difference.

Small catalogues use an exact flat index; larger ones an inverted file with
8-bit codes (the quantised RootSIFT values are stored exactly). The tunables
are one frozen ``VoteConfig``, written whole into each index's manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError
from .config import Config, check
from .features import DESCRIPTOR_DIMS


@dataclass(frozen=True)
class VoteConfig(Config):
    """How the vocabulary is searched and how votes are counted."""

    neighbours_per_descriptor: int = 16  # reference descriptors looked up per query descriptor
    background_image_rank: int = 1  # 80 full-benchmark queries: r@10 0.24 (1), 0.21 (4), 0.17 (8)
    inverted_lists_probed: int = 16  # of an inverted-file vocabulary, per lookup
    exact_search_max_descriptors: int = 60_000  # up to this many a flat scan is fast and needs no training
    max_inverted_lists: int = 4096
    rotation_bins: int = 8  # 45 degrees each
    scale_bins: int = 12
    scale_bin_octaves: float = 1.0

    def __post_init__(self) -> None:
        for name in ("neighbours_per_descriptor", "inverted_lists_probed", "max_inverted_lists",
                     "rotation_bins", "scale_bins"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1")
        check(self.background_image_rank >= 0, "background_image_rank must be at least 0")
        check(self.exact_search_max_descriptors >= 0, "exact_search_max_descriptors must be at least 0")
        check(self.scale_bin_octaves > 0, "scale_bin_octaves must be above 0")


def build_vocabulary(descriptors: np.ndarray, seed: int = 0, *, rows: np.ndarray | None = None,
                     config: VoteConfig = VoteConfig()) -> Any:
    """A FAISS index over reference descriptors whose ids are their global store rows (default 0..n-1).

    Both kinds take ``add_with_ids`` and ``remove_ids``, so a change to the
    index adds and removes only the descriptors of the images it touches.
    """
    import faiss

    data = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(len(descriptors), DESCRIPTOR_DIMS)
    count = len(data)
    if count <= config.exact_search_max_descriptors:
        index = faiss.IndexIDMap2(faiss.IndexFlatL2(DESCRIPTOR_DIMS))
    else:
        lists = int(min(4 * math.sqrt(count), count // 40, config.max_inverted_lists))
        quantiser = faiss.IndexFlatL2(DESCRIPTOR_DIMS)
        index = faiss.IndexIVFScalarQuantizer(quantiser, DESCRIPTOR_DIMS, lists,
                                              faiss.ScalarQuantizer.QT_8bit_direct,
                                              faiss.METRIC_L2)
        # FAISS wants >= 39 training points per list (and says so on stderr otherwise)
        sample = data[np.random.default_rng(seed).permutation(count)[:40 * lists]]
        index.train(sample)
        index.nprobe = config.inverted_lists_probed
    add_descriptors(index, data, np.arange(count, dtype=np.int64) if rows is None else rows)
    return index


def outgrown(index: Any, count: int, config: VoteConfig = VoteConfig()) -> bool:
    """True when an exact (flat) vocabulary would hold more than ``count`` allows: rebuild it as an inverted file."""
    return not hasattr(_inverted(index), "nlist") and count > config.exact_search_max_descriptors


def add_descriptors(index: Any, descriptors: np.ndarray, rows: np.ndarray) -> None:
    """Add descriptors under their global store rows."""
    if len(descriptors):
        index.add_with_ids(np.ascontiguousarray(descriptors, dtype=np.float32).reshape(-1, DESCRIPTOR_DIMS),
                           np.ascontiguousarray(rows, dtype=np.int64))


def remove_descriptors(index: Any, rows: np.ndarray) -> int:
    """Remove the descriptors with these global rows; returns how many were removed."""
    if not len(rows):
        return 0
    import faiss

    return int(index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(rows, dtype=np.int64))))


def _inverted(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return index


def write_vocabulary(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_vocabulary(path: Path, expected: int, *, config: VoteConfig = VoteConfig()) -> Any:
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFormatError(f"{path} is not a readable FAISS index ({str(exc).splitlines()[0]}); "
                               "rebuild the index") from None
    if index.ntotal != expected or index.d != DESCRIPTOR_DIMS:
        raise IndexFormatError(f"{path} holds {index.ntotal} descriptors, the local store {expected}; "
                               "rebuild the index")
    inverted = _inverted(index)
    if hasattr(inverted, "nprobe"):
        inverted.nprobe = config.inverted_lists_probed
    return index


def vote(index: Any, row_image: np.ndarray, descriptors: np.ndarray, query_keypoints: np.ndarray,
         reference_keypoints: np.ndarray, *, config: VoteConfig = VoteConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, votes) for every image that got a vote, best first.

    Keypoints (n, 4: x, y, size, angle) of the query and of every reference
    row let votes be checked for weak geometric consistency (Jegou et
    al. 2008): the votes for an image count only within its most popular bin of
    rotation and scale change, since a pin seen in a photo turns and scales as
    one piece while chance neighbours scatter.
    """
    if len(descriptors) == 0 or index.ntotal == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    distances, rows = index.search(np.ascontiguousarray(descriptors, dtype=np.float32),
                                   min(config.neighbours_per_descriptor, index.ntotal))
    distances = np.sqrt(np.maximum(distances, 0))
    images = np.where(rows >= 0, row_image[np.where(rows >= 0, rows, 0)], -1)
    # keep each image's nearest neighbour per query descriptor (columns are sorted by distance)
    first = np.ones(images.shape, bool)
    for column in range(1, images.shape[1]):
        first[:, column] = ~(images[:, :column] == images[:, column:column + 1]).any(axis=1)
    first &= images >= 0
    rank = np.cumsum(first, axis=1) - 1  # 0 for the nearest image, 1 for the next distinct one...
    # background: the distance at which the background_image_rank-th distinct image appears (or the farthest seen)
    background = np.where(first & (rank == config.background_image_rank), distances, np.inf).min(axis=1)
    background = np.where(np.isfinite(background), background, distances[:, -1])[:, None]
    weights = np.clip(1.0 - distances / np.maximum(background, 1e-6), 0.0, 1.0) * first
    chosen = first & (weights > 0)
    chosen_images, chosen_weights = images[chosen], weights[chosen]
    reference = np.asarray(reference_keypoints[rows[chosen]], dtype=np.float32).reshape(-1, 4)
    query = query_keypoints[np.nonzero(chosen)[0]]
    rotation_bins, scale_bins = config.rotation_bins, config.scale_bins
    turn = ((query[:, 3] - reference[:, 3]) % 360.0 // (360.0 / rotation_bins)).astype(np.int64)
    scale = np.clip(np.floor(np.log2(np.maximum(query[:, 2], 1e-3) / np.maximum(reference[:, 2], 1e-3))
                             / config.scale_bin_octaves) + scale_bins // 2, 0, scale_bins - 1).astype(np.int64)
    keys = (chosen_images * rotation_bins + turn) * scale_bins + scale
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    bin_totals = np.bincount(inverse, weights=chosen_weights)
    unique_images, image_of_bin = np.unique(unique_keys // (rotation_bins * scale_bins), return_inverse=True)
    totals = np.zeros(len(unique_images))
    np.maximum.at(totals, image_of_bin, bin_totals)
    totals = totals.astype(np.float32)
    ranking = np.argsort(-totals, kind="stable")
    return unique_images[ranking], totals[ranking]
