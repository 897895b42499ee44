"""The weight-free candidate stage: nearest reference descriptors vote for their images.

Every query descriptor looks up its ``neighbours_per_descriptor`` nearest reference
descriptors in one FAISS index over all reference images and votes at most
once per image, for its nearest neighbour there, with weight ``1 - d / d_next``
(``d_next``: distance of the nearest neighbour in the next other image, a
ratio test across images). Descriptors shared by many images (plain enamel
edges) thus vote little, distinctive ones a lot. Votes must also agree on the
pin's pose: its turn, its size and where its centre lies in the photo (a
Hough transform over each image's matches).

Measured on 100 single-pin photos of the full benchmark (2,295 pins):
true pin in the top 50 for 0.34 of photos with plain votes, 0.36 with the
geometric check (top 1: 0.17 -> 0.23); 16 to 64 neighbours and 16 to 48
probed lists made no difference.

Small catalogues use an exact flat index; larger ones an inverted file with
8-bit codes (the quantised RootSIFT values are stored exactly). The tunables
are one frozen ``VoteConfig``, written whole into each index's manifest.

The vocabulary has a fixed memory budget (``vocabulary_budget_mb``, about
72 B per descriptor: 64 B of codes and an 8-byte id): when a catalogue is so
large that all its descriptors would not fit, each image puts only
``budget / images`` of its descriptors, spread over all its views, into the
vocabulary (``vote_rows``), so the vote's memory stays fixed as the catalogue
grows. Verification still reads all features of its candidates from the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Config, check
from .features import DESCRIPTOR_DIMS


@dataclass(frozen=True)
class VoteConfig(Config):
    """How the vocabulary is searched and how votes are counted."""

    # reference descriptors looked up per query descriptor, and the distinct image whose distance is the
    # background (a descriptor votes for each nearer image). With bins of position, on 300 full-benchmark photos
    # (seed 2) the true image was among the vote's first 50 / 150 for 0.533 / 0.617 at 64 and 16, 0.553 / 0.640
    # at 64 and 32, as at 128 and 32; 0.497 / 0.597 at 64 and 16 without position. Without position, once the
    # cheap check sorted the first 150 (pinid.identify.recogniser._screen), 16 and 4 had put the true image among
    # the first 60 tries for 0.48 / 0.53 of 200 photos (seeds 2 / 5) against 0.44 / 0.46 at 16 and 1
    neighbours_per_descriptor: int = 64
    background_image_rank: int = 32
    # width of a bin of the pin's predicted centre, as a share of its predicted long side (0: rotation and scale
    # change only, weak geometric consistency). At 64 and 16: first 50 / 150 0.533 / 0.617 at 0.25, 0.527 /
    # 0.617 at 0.15, 0.480 / 0.550 at 0.5 (100 photos)
    translation_bin_share: float = 0.25
    # of an inverted-file vocabulary, per lookup: with the settings above 8 put the true image among 300
    # full-benchmark photos' tries for 0.710 against 0.693 at 16 (first 0.573 / 0.577), in 28 ms a search of
    # 870 descriptors against 40
    inverted_lists_probed: int = 8
    exact_search_max_descriptors: int = 60_000  # up to this many a flat scan is fast and needs no training
    max_inverted_lists: int = 4096
    rotation_bins: int = 8  # 45 degrees each
    scale_bins: int = 12  # of the scale change, or with position bins of the long side in the photo (1 px up)
    scale_bin_octaves: float = 1.0
    vocabulary_budget_mb: int = 1024  # vocabulary memory; above it each image keeps an even spread of its rows
    vote_descriptors_per_image: int = 0  # a fixed cap per image instead (0: as the budget allows)
    vote_query_descriptors: int = 0  # a photo's first descriptors that vote (0: all it has)

    def __post_init__(self) -> None:
        for name in ("neighbours_per_descriptor", "inverted_lists_probed", "max_inverted_lists",
                     "rotation_bins", "scale_bins"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1")
        check(self.background_image_rank >= 0, "background_image_rank must be at least 0")
        check(self.exact_search_max_descriptors >= 0, "exact_search_max_descriptors must be at least 0")
        check(self.scale_bin_octaves > 0, "scale_bin_octaves must be above 0")
        check(self.translation_bin_share >= 0, "translation_bin_share must be at least 0 (0: no position bins)")
        check(self.vocabulary_budget_mb >= 0, "vocabulary_budget_mb must be at least 0 (0: no budget)")
        check(self.vote_descriptors_per_image >= 0, "vote_descriptors_per_image must be at least 0 (0: all)")
        check(self.vote_query_descriptors >= 0, "vote_query_descriptors must be at least 0 (0: all)")


#: Bytes one descriptor takes in an inverted-file vocabulary: 64 one-byte codes and its 8-byte id.
VOCABULARY_BYTES_PER_DESCRIPTOR = DESCRIPTOR_DIMS + 8


def vote_descriptors_per_image(config: VoteConfig, catalogue_images: int) -> int:
    """How many descriptors each image may put into the vocabulary (0: all of them).

    ``vote_descriptors_per_image`` when set; else the budget shared equally
    by ``catalogue_images`` images (1 GB, 72 B each: about 15 M descriptors,
    so every image of up to ~20,000 keeps all its 680 or so; 100,000 keep 149 each).
    """
    if config.vote_descriptors_per_image:
        return config.vote_descriptors_per_image
    if not config.vocabulary_budget_mb:
        return 0
    budget = config.vocabulary_budget_mb * 1024 * 1024 // VOCABULARY_BYTES_PER_DESCRIPTOR
    return max(1, budget // max(1, catalogue_images))


def vote_rows(keypoints: np.ndarray, descriptors: np.ndarray, config: VoteConfig, catalogue_images: int
              ) -> np.ndarray:
    """The rows (local to one image, ascending) of its features that go into the vocabulary.

    All of them while the budget allows; else ``cap`` rows spread evenly over
    the image's rows. Rows come view by view (each simulated view's strongest
    keypoints, on the light and then the dark backdrop), so an even spread
    keeps every view, backdrop and strength alike. Measured on 200 photos of
    the full benchmark at 150 of ~680 per image (true image in the vote's top
    50): all 0.43, even spread 0.36, random 0.35, the strongest by SIFT
    response within each view 0.31, the largest keypoints 0.25, the smallest
    0.17: the strongest are alike across views, and variety finds more pins.
    """
    count = len(keypoints)
    if len(descriptors) != count:
        raise ValueError(f"{count} keypoints but {len(descriptors)} descriptors")
    cap = vote_descriptors_per_image(config, catalogue_images)
    if not cap or count <= cap:
        return np.arange(count, dtype=np.int64)
    return _spread(count, cap)


def _spread(count: int, cap: int) -> np.ndarray:
    """``cap`` of ``count`` positions, evenly spaced from the first (ascending, distinct since cap < count)."""
    return (np.arange(cap, dtype=np.int64) * count) // cap


def vote_positions(keypoints: np.ndarray, row_images: np.ndarray, config: VoteConfig, catalogue_images: int
                   ) -> np.ndarray:
    """``vote_rows`` for many images at once: positions (ascending) into rows whose images are contiguous.

    ``row_images`` names each row's image (a build: ``np.repeat(image_ids, counts)``; a store:
    ``store.row_image[rows]``); ``catalogue_images`` is the image count of the whole index after the
    change, which sets each image's share of the budget.
    """
    row_images = np.asarray(row_images).reshape(-1)
    if len(keypoints) != len(row_images):
        raise ValueError(f"{len(keypoints)} keypoints but {len(row_images)} row images")
    count = len(row_images)
    cap = vote_descriptors_per_image(config, catalogue_images)
    if not count or not cap:
        return np.arange(count, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, row_images[1:] != row_images[:-1]])
    ends = np.r_[starts[1:], count]
    if (ends - starts).max() <= cap:
        return np.arange(count, dtype=np.int64)
    kept = [start + _spread(end - start, cap) if end - start > cap else np.arange(start, end)
            for start, end in zip(starts.tolist(), ends.tolist())]
    return np.concatenate(kept).astype(np.int64)


def build_vocabulary(descriptors: np.ndarray, seed: int = 0, *, rows: np.ndarray | None = None,
                     config: VoteConfig = VoteConfig()) -> Any:
    """A FAISS index over reference descriptors whose ids are their global store rows (default 0..n-1).

    Both kinds take ``add_with_ids`` and ``remove_ids``, so a change to the
    index adds and removes only the descriptors of the images it touches.
    """
    import faiss

    data = np.asarray(descriptors).reshape(len(descriptors), DESCRIPTOR_DIMS)  # uint8 codes stay uint8
    count = len(data)
    index = train_vocabulary(data, seed, config=config)
    if index is None:
        index = faiss.IndexIDMap2(faiss.IndexFlatL2(DESCRIPTOR_DIMS))
    add_descriptors(index, data, np.arange(count, dtype=np.int64) if rows is None else rows)
    return index


def train_vocabulary(descriptors: np.ndarray, seed: int = 0, *, config: VoteConfig = VoteConfig(),
                     count: int | None = None) -> Any | None:
    """An empty, trained inverted file for a vocabulary of ``count`` descriptors (default: as many as given),
    or ``None`` when that many fit exact search (a flat index needs no training).

    Trained on a sample of ``descriptors`` (40 per list; passing all of them or
    a larger sample gives the same index): what shards share, without the cost
    of adding every descriptor (at 15 M, most of an hour on 2 cores) only to empty it again.
    """
    import faiss

    data = np.asarray(descriptors).reshape(len(descriptors), DESCRIPTOR_DIMS)
    count = len(data) if count is None else count
    if count <= config.exact_search_max_descriptors:
        return None
    lists = int(min(4 * math.sqrt(count), count // 40, config.max_inverted_lists))
    quantiser = faiss.IndexFlatL2(DESCRIPTOR_DIMS)
    index = faiss.IndexIVFScalarQuantizer(quantiser, DESCRIPTOR_DIMS, lists, faiss.ScalarQuantizer.QT_8bit_direct,
                                          faiss.METRIC_L2)
    # the codes themselves, not their offsets from the list's centre: 8-bit direct coding stores bytes, and
    # an offset (negative half the time) does not fit one. Coded by offset (FAISS's default, and pinid's before
    # this was set), the true image was among the vote's first 50 / 150 for 0.567 / 0.647 of 300
    # full-benchmark photos, against 0.607 / 0.677 stored exactly (8 lists probed; scripts/probe_stages.py)
    index.by_residual = False
    # FAISS wants >= 39 training points per list (and says so on stderr otherwise)
    sample = data[np.random.default_rng(seed).permutation(len(data))[:40 * lists]]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = config.inverted_lists_probed
    return index


def add_descriptors(index: Any, descriptors: np.ndarray, rows: np.ndarray) -> None:
    """Add descriptors under their global store rows (converted to float32 a chunk at a time: a 15 M-row
    vocabulary would otherwise need 3.8 GB of float32 copies at once)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) != len(descriptors):
        raise ValueError(f"{len(descriptors)} descriptors but {len(rows)} rows")
    for start in range(0, len(rows), _ADD_CHUNK):
        chunk = np.asarray(descriptors[start:start + _ADD_CHUNK]).reshape(-1, DESCRIPTOR_DIMS)
        index.add_with_ids(np.ascontiguousarray(chunk, dtype=np.float32),
                           np.ascontiguousarray(rows[start:start + _ADD_CHUNK]))


_ADD_CHUNK = 1 << 20  # descriptors converted and added at a time (256 MB of float32)


@dataclass(frozen=True)
class Ballot:
    """The vote's outcome: images best first, their votes, and the tentative matches behind those votes.

    ``query_rows``, ``reference_rows`` (global store rows) and ``match_images``
    list, for every image, the matches that voted in its winning bin of
    rotation and scale change: what a cheap spatial check can test before full
    verification (``pinid.local.verify.quick_inliers``).
    """

    images: np.ndarray
    totals: np.ndarray
    query_rows: np.ndarray
    reference_rows: np.ndarray
    match_images: np.ndarray

    @classmethod
    def empty(cls) -> "Ballot":
        nothing = np.zeros(0, np.int64)
        return cls(nothing, np.zeros(0, np.float32), nothing, nothing, nothing)


def vote(index: Any, row_image: np.ndarray, descriptors: np.ndarray, query_keypoints: np.ndarray,
         reference_keypoints: np.ndarray, *, config: VoteConfig = VoteConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, votes) for every image that got a vote, best first (``ballot`` without its matches)."""
    found = ballot(index, row_image, descriptors, query_keypoints, reference_keypoints, config=config)
    return found.images, found.totals


def ballot(index: Any, row_image: np.ndarray, descriptors: np.ndarray, query_keypoints: np.ndarray,
           reference_keypoints: np.ndarray, *, config: VoteConfig = VoteConfig()) -> Ballot:
    """Every image that got a vote, best first, with the matches behind its votes.

    Keypoints (n, 4: x, y, size, angle) of the query and of every reference
    row let votes be checked for geometric consistency: the votes for an image
    count only within its most popular bin of pose, since a pin seen in a
    photo turns, scales and moves as one piece while chance neighbours scatter.
    With ``translation_bin_share`` (a Hough transform, Lowe 2004) each match
    predicts where the pin's centre lies in the photo, how large the pin is
    and how it is turned; reference keypoints must then be in their pin's
    frame (position from the pin box's centre and size, in units of the box's
    long side: ``LocalStore.vote_keypoints``). Without it only the rotation and
    the scale change are binned (weak geometric consistency, Jegou et al. 2008).
    """
    if len(descriptors) == 0 or index.ntotal == 0:
        return Ballot.empty()
    if config.vote_query_descriptors:  # a photo's features come best first (query_features: spread_strongest)
        descriptors = descriptors[:config.vote_query_descriptors]
        query_keypoints = query_keypoints[:config.vote_query_descriptors]
    distances, rows = index.search(np.ascontiguousarray(descriptors, dtype=np.float32),
                                   min(config.neighbours_per_descriptor, index.ntotal))
    distances = np.sqrt(np.maximum(distances, 0))
    images = np.where(rows >= 0, row_image[np.where(rows >= 0, rows, 0)], -1)
    first = first_of_each_image(images)  # each image's nearest neighbour per query descriptor
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
    # the scale change, or with positions the pin's long side in the photo (reference sizes are shares of it)
    log_size = np.log2(np.maximum(query[:, 2], 1e-3) / np.maximum(reference[:, 2], 1e-6)) / config.scale_bin_octaves
    match_rows = np.arange(len(query))
    pose_keys = scale_bins * 4 * _POSITION_BINS ** 2  # (scale, grid, row, column) keys per (image, rotation)
    if config.translation_bin_share:
        scale = np.clip(np.floor(log_size), 0, scale_bins - 1).astype(np.int64)
        keys, match_rows = _pose_keys(query, reference, log_size, scale, config)
        keys = (np.tile(chosen_images, 4) * rotation_bins + np.tile(turn, 4)) * pose_keys + keys
    else:
        scale = np.clip(np.floor(log_size) + scale_bins // 2, 0, scale_bins - 1).astype(np.int64)
        keys = (chosen_images * rotation_bins + turn) * pose_keys + scale
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    bin_totals = np.bincount(inverse, weights=chosen_weights[match_rows])
    unique_images, image_of_bin = np.unique(unique_keys // (rotation_bins * pose_keys), return_inverse=True)
    totals = np.zeros(len(unique_images))
    np.maximum.at(totals, image_of_bin, bin_totals)
    # each image's winning bin (the first of equal ones) and the matches that voted in it
    winner = np.full(len(unique_images), -1, np.int64)
    best_bins = np.flatnonzero(bin_totals == totals[image_of_bin])
    winner[image_of_bin[best_bins[::-1]]] = best_bins[::-1]
    in_winner = match_rows[winner[image_of_bin[inverse]] == inverse]  # a match is in at most one winning bin
    totals = totals.astype(np.float32)
    ranking = np.argsort(-totals, kind="stable")
    return Ballot(unique_images[ranking], totals[ranking], np.nonzero(chosen)[0][in_winner],
                  rows[chosen][in_winner].astype(np.int64), chosen_images[in_winner].astype(np.int64))


def first_of_each_image(images: np.ndarray) -> np.ndarray:
    """Of each row's neighbours (columns nearest first, naming their images; -1: none), which are the
    nearest of their image in that row.

    A stable sort of each row by image puts an image's nearest column first among its own: 2.5 times
    faster than comparing each column with all before it (64 neighbours of 1,500 descriptors: 1.7 ms).
    """
    images = np.asarray(images)
    order = np.argsort(images, axis=1, kind="stable")
    grouped = np.take_along_axis(images, order, axis=1)
    starts = np.ones(images.shape, bool)
    starts[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    first = np.empty(images.shape, bool)
    np.put_along_axis(first, order, starts, axis=1)
    return first & (images >= 0)


_POSITION_BINS = 1 << 12  # per axis (centres beyond are clipped): 1,400 px over the smallest bin, 0.35 px


def _pose_keys(query: np.ndarray, reference: np.ndarray, log_size: np.ndarray, scale: np.ndarray,
               config: VoteConfig) -> tuple[np.ndarray, np.ndarray]:
    """Each match's (scale, centre position) bin keys in four grids offset by half a bin (so that a pin
    whose centre falls near a bin edge still has all its matches in one), and the match of each key.

    A match predicts the pin's long side in the photo (``2 ** log_size``) and,
    by turning and scaling its reference keypoint's offset from the pin's
    centre, where that centre lies. Bins are ``translation_bin_share`` of the
    long side at the centre of the match's scale bin wide.
    """
    size = np.exp2(log_size * config.scale_bin_octaves)
    angle = np.deg2rad(query[:, 3] - reference[:, 3])
    cos, sin = np.cos(angle), np.sin(angle)
    centre_x = query[:, 0] - size * (cos * reference[:, 0] - sin * reference[:, 1])
    centre_y = query[:, 1] - size * (sin * reference[:, 0] + cos * reference[:, 1])
    width = config.translation_bin_share * np.exp2((scale + 0.5) * config.scale_bin_octaves)
    keys = []
    for shift_x, shift_y in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)):
        column = np.clip(np.floor(centre_x / width + shift_x), -_POSITION_BINS // 2, _POSITION_BINS // 2 - 1)
        row = np.clip(np.floor(centre_y / width + shift_y), -_POSITION_BINS // 2, _POSITION_BINS // 2 - 1)
        grid = int(2 * shift_y + 4 * shift_x)  # 0..3: bins of different grids never share a key
        keys.append(((scale * 4 + grid) * _POSITION_BINS + (row.astype(np.int64) + _POSITION_BINS // 2))
                    * _POSITION_BINS + (column.astype(np.int64) + _POSITION_BINS // 2))
    return np.concatenate(keys), np.tile(np.arange(len(query)), 4)
