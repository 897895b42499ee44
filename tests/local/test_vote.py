"""VoteConfig reaches the vocabulary and the vote (pinid.local.vote)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pinid.local.features import DESCRIPTOR_DIMS
from pinid.local.vote import VoteConfig, build_vocabulary, read_vocabulary, vote, write_vocabulary


def test_vote_config_is_obeyed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    descriptors = rng.integers(0, 256, (4000, DESCRIPTOR_DIMS)).astype(np.uint8)
    assert not hasattr(build_vocabulary(descriptors), "nlist")  # 4,000 descriptors: a flat scan by default
    inverted = build_vocabulary(descriptors, config=VoteConfig(exact_search_max_descriptors=1000))
    assert inverted.nlist == 100  # count // 40
    write_vocabulary(inverted, tmp_path / "vocabulary.faiss")
    assert read_vocabulary(tmp_path / "vocabulary.faiss", 4000).nprobe == VoteConfig().inverted_lists_probed
    assert read_vocabulary(tmp_path / "vocabulary.faiss", 4000,
                           config=VoteConfig(inverted_lists_probed=3)).nprobe == 3

    # two reference images of one descriptor each; the query descriptor is nearest to image 7's
    flat = build_vocabulary(descriptors[:2])
    row_image = np.array([7, 9])
    keypoints = np.array([[10, 10, 4, 0], [10, 10, 4, 0]], np.float32)
    query = descriptors[:1].astype(np.int16)
    query[0, 0] = query[0, 0] + 1 if query[0, 0] < 255 else 254
    ids, totals = vote(flat, row_image, query.astype(np.uint8), keypoints[:1], keypoints)
    assert ids.tolist() == [7] and totals[0] > 0
    # with one neighbour looked up there is no second image to measure the background by: no vote
    ids, _ = vote(flat, row_image, query.astype(np.uint8), keypoints[:1], keypoints,
                  config=VoteConfig(neighbours_per_descriptor=1))
    assert ids.tolist() == []
