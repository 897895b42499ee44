"""The weight-free candidate stage: nearest reference descriptors vote for their images.

Every query descriptor looks up its ``NEIGHBOURS`` nearest reference
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
8-bit codes (the quantised RootSIFT values are stored exactly).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError
from .features import DESCRIPTOR_DIMS

NEIGHBOURS = 16
BACKGROUND_RANK = 1  # measured on 80 full-benchmark queries: r@10 0.24 (1), 0.21 (4), 0.17 (8)
PROBES = 16
_EXACT_LIMIT = 60_000  # descriptors; below this a flat scan is fast and needs no training
_MAX_LISTS = 4096
_ROTATION_BINS = 8  # 45 degrees
_SCALE_BINS = 12
_SCALE_BIN = 1.0  # octaves


def build_vocabulary(descriptors: np.ndarray, seed: int = 0) -> Any:
    """A FAISS index over all reference descriptors (ids = descriptor rows)."""
    import faiss

    data = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(len(descriptors), DESCRIPTOR_DIMS)
    count = len(data)
    if count <= _EXACT_LIMIT:
        index = faiss.IndexFlatL2(DESCRIPTOR_DIMS)
    else:
        lists = int(min(4 * math.sqrt(count), count // 40, _MAX_LISTS))
        quantiser = faiss.IndexFlatL2(DESCRIPTOR_DIMS)
        index = faiss.IndexIVFScalarQuantizer(quantiser, DESCRIPTOR_DIMS, lists,
                                              faiss.ScalarQuantizer.QT_8bit_direct,
                                              faiss.METRIC_L2)
        # FAISS wants >= 39 training points per list (and says so on stderr otherwise)
        sample = data[np.random.default_rng(seed).permutation(count)[:40 * lists]]
        index.train(sample)
    if count:
        index.add(data)
    return index


def write_vocabulary(index: Any, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_vocabulary(path: Path, expected: int) -> Any:
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFormatError(f"{path} is not a readable FAISS index ({str(exc).splitlines()[0]}); "
                               "rebuild the index") from None
    if index.ntotal != expected or index.d != DESCRIPTOR_DIMS:
        raise IndexFormatError(f"{path} holds {index.ntotal} descriptors, the local store {expected}; "
                               "rebuild the index")
    if hasattr(index, "nprobe"):
        index.nprobe = PROBES
    else:
        try:
            faiss.extract_index_ivf(index).nprobe = PROBES
        except RuntimeError:
            pass
    return index


def vote(index: Any, row_image: np.ndarray, descriptors: np.ndarray, query_keypoints: np.ndarray,
         reference_keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
                                   min(NEIGHBOURS, index.ntotal))
    distances = np.sqrt(np.maximum(distances, 0))
    images = np.where(rows >= 0, row_image[np.where(rows >= 0, rows, 0)], -1)
    # keep each image's nearest neighbour per query descriptor (columns are sorted by distance)
    first = np.ones(images.shape, bool)
    for column in range(1, images.shape[1]):
        first[:, column] = ~(images[:, :column] == images[:, column:column + 1]).any(axis=1)
    first &= images >= 0
    rank = np.cumsum(first, axis=1) - 1  # 0 for the nearest image, 1 for the next distinct one...
    # background: the distance at which the BACKGROUND_RANK-th distinct image appears (or the farthest seen)
    background = np.where(first & (rank == BACKGROUND_RANK), distances, np.inf).min(axis=1)
    background = np.where(np.isfinite(background), background, distances[:, -1])[:, None]
    weights = np.clip(1.0 - distances / np.maximum(background, 1e-6), 0.0, 1.0) * first
    chosen = first & (weights > 0)
    chosen_images, chosen_weights = images[chosen], weights[chosen]
    reference = np.asarray(reference_keypoints[rows[chosen]], dtype=np.float32).reshape(-1, 4)
    query = query_keypoints[np.nonzero(chosen)[0]]
    turn = ((query[:, 3] - reference[:, 3]) % 360.0 // (360.0 / _ROTATION_BINS)).astype(np.int64)
    scale = np.clip(np.floor(np.log2(np.maximum(query[:, 2], 1e-3) / np.maximum(reference[:, 2], 1e-3))
                             / _SCALE_BIN) + _SCALE_BINS // 2, 0, _SCALE_BINS - 1).astype(np.int64)
    keys = (chosen_images * _ROTATION_BINS + turn) * _SCALE_BINS + scale
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    bin_totals = np.bincount(inverse, weights=chosen_weights)
    unique_images, image_of_bin = np.unique(unique_keys // (_ROTATION_BINS * _SCALE_BINS), return_inverse=True)
    totals = np.zeros(len(unique_images))
    np.maximum.at(totals, image_of_bin, bin_totals)
    totals = totals.astype(np.float32)
    ranking = np.argsort(-totals, kind="stable")
    return unique_images[ranking], totals[ranking]
