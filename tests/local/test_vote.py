"""VoteConfig reaches the vocabulary and the vote (pinid.local.vote)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pinid.local.features import DESCRIPTOR_DIMS
from pinid.local.vocabulary import read_shard, write_shard
from pinid.local.vote import VoteConfig, build_vocabulary, vote


def test_vote_config_is_obeyed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    descriptors = rng.integers(0, 256, (4000, DESCRIPTOR_DIMS)).astype(np.uint8)
    assert not hasattr(build_vocabulary(descriptors), "nlist")  # 4,000 descriptors: a flat scan by default
    inverted = build_vocabulary(descriptors, config=VoteConfig(exact_search_max_descriptors=1000))
    assert inverted.nlist == 100  # count // 40
    write_shard(inverted, tmp_path)
    assert read_shard(tmp_path).nprobe == VoteConfig().inverted_lists_probed
    assert read_shard(tmp_path, VoteConfig(inverted_lists_probed=3)).nprobe == 3

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


def test_vote_rows_keep_every_descriptor_within_the_budget_and_the_largest_beyond_it() -> None:
    from pinid.local.vote import VOCABULARY_BYTES_PER_DESCRIPTOR, vote_descriptors_per_image, vote_rows

    rng = np.random.default_rng(0)
    keypoints = rng.uniform(1, 50, (700, 4)).astype(np.float32)
    descriptors = rng.integers(0, 256, (700, DESCRIPTOR_DIMS)).astype(np.uint8)
    config = VoteConfig()  # 1 GB: ~15 M descriptors
    assert vote_rows(keypoints, descriptors, config, 2_295).tolist() == list(range(700))  # the full benchmark: all
    kept = vote_rows(keypoints, descriptors, config, 100_000)
    per_image = (1 << 30) // VOCABULARY_BYTES_PER_DESCRIPTOR // 100_000  # 149
    assert len(kept) == vote_descriptors_per_image(config, 100_000) == per_image
    assert kept.tolist() == sorted(set(kept.tolist()))  # distinct rows in store order
    assert kept[0] == 0 and kept[-1] >= 700 - 700 // per_image - 1  # spread over all views, first to last
    assert (np.diff(kept) >= 700 // per_image).all()
    assert len(vote_rows(keypoints, descriptors, VoteConfig(vote_descriptors_per_image=3), 1)) == 3  # a fixed cap
    assert len(vote_rows(keypoints, descriptors, VoteConfig(vocabulary_budget_mb=0), 10**9)) == 700  # no budget
    assert vote_rows(keypoints[:2], descriptors[:2], config, 10**9).tolist() == [0]  # at least one each
    assert len(vote_rows(keypoints[:0], descriptors[:0], config, 100_000)) == 0


def test_only_a_photos_strongest_descriptors_vote_when_limited() -> None:
    rng = np.random.default_rng(1)
    references = rng.integers(0, 256, (2, DESCRIPTOR_DIMS)).astype(np.uint8)
    vocabulary = build_vocabulary(references)
    row_image = np.array([7, 9])
    keypoints = np.array([[10, 10, 4, 0], [10, 10, 4, 0]], np.float32)
    query = references.copy()  # descriptor 0 (the strongest) is image 7's, descriptor 1 image 9's
    ids, _ = vote(vocabulary, row_image, query, keypoints, keypoints)
    assert sorted(ids.tolist()) == [7, 9]
    ids, _ = vote(vocabulary, row_image, query, keypoints, keypoints, config=VoteConfig(vote_query_descriptors=1))
    assert ids.tolist() == [7]


def test_descriptors_are_added_a_chunk_at_a_time(monkeypatch) -> None:
    import pinid.local.vote as vote_module

    monkeypatch.setattr(vote_module, "_ADD_CHUNK", 3)
    descriptors = np.random.default_rng(2).integers(0, 256, (10, DESCRIPTOR_DIMS)).astype(np.uint8)
    rows = np.arange(100, 110)
    vocabulary = build_vocabulary(descriptors, rows=rows)
    assert vocabulary.ntotal == 10
    _, found = vocabulary.search(descriptors.astype(np.float32), 1)
    assert found[:, 0].tolist() == rows.tolist()


def test_budget_settings_are_checked() -> None:
    import pytest

    from pinid.errors import IndexFormatError

    for name in ("vocabulary_budget_mb", "vote_descriptors_per_image", "vote_query_descriptors"):
        with pytest.raises(IndexFormatError, match=name):
            VoteConfig.from_dict({name: -1})


def test_vote_positions_budget_each_image_alike() -> None:
    from pinid.local.vote import vote_positions, vote_rows

    rng = np.random.default_rng(3)
    counts = [5, 2, 7]
    keypoints = rng.uniform(1, 50, (sum(counts), 4)).astype(np.float32)
    row_images = np.repeat([4, 8, 6], counts)
    config = VoteConfig(vote_descriptors_per_image=3)
    expected, start = [], 0
    for count in counts:
        expected += (start + vote_rows(keypoints[start:start + count], np.zeros((count, DESCRIPTOR_DIMS)), config,
                                       3)).tolist()
        start += count
    assert vote_positions(keypoints, row_images, config, 3).tolist() == expected
    assert len(expected) == 3 + 2 + 3
    assert vote_positions(keypoints, row_images, VoteConfig(), 3).tolist() == list(range(14))  # within budget


def test_the_store_gives_the_vote_keypoints_in_the_pins_frame_from_memory_and_entries_by_reading(tmp_path) -> None:
    import gc
    import os as os_module

    from pinid.local.features import reference_entry
    from pinid.local.store import LocalStore, Segment, write_local_store
    from tests.support import pin

    entries = [reference_entry(pin(seed)) for seed in (1, 2)]
    descriptors = write_local_store(tmp_path / "local", zip([7, 9], entries))
    def open_here() -> list[str]:
        """This process's descriptors open on files of this test (other threads' sockets and pipes come and go)."""
        found = []
        for fd in os_module.listdir("/proc/self/fd"):
            try:
                target = os_module.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith(str(tmp_path)):
                found.append(target)
        return found

    open_before = open_here()
    store = LocalStore.load(tmp_path / "local", [Segment("000000", 0, len(descriptors))])
    assert not any(isinstance(value, np.memmap) for value in vars(store).values())
    rows = np.array([[0, len(entries[0].features)]])  # the first row of each image
    got = store.vote_keypoints[rows]
    assert got.shape == (1, 2, 4)
    for found, entry in zip(got[0], entries):  # from the pin box's centre, in units of its long side
        x0, y0, x1, y1 = entry.pin_box
        long_side = max(x1 - x0, y1 - y0)
        x, y, size, angle = entry.features.keypoints[0]
        expected = [(x - (x0 + x1) / 2) / long_side, (y - (y0 + y1) / 2) / long_side, size / long_side, angle]
        np.testing.assert_allclose(found, expected, rtol=2e-3, atol=2e-3)
        assert abs(found[0]) <= 0.75 and abs(found[1]) <= 0.75
    again = store.entry(9)
    assert np.array_equal(again.features.descriptors, entries[1].features.descriptors)
    assert np.array_equal(again.colour, entries[1].colour)
    del store, again
    gc.collect()
    assert open_here() == open_before  # the read descriptors are closed with the store


def test_a_ballot_keeps_the_matches_that_voted_in_each_images_winning_bin() -> None:
    from pinid.local.vote import ballot

    rng = np.random.default_rng(2)
    references = rng.integers(0, 256, (6, DESCRIPTOR_DIMS)).astype(np.uint8)
    row_image = np.array([7, 7, 7, 9, 9, 9])
    # image 7: three matches turned by the same 90 degrees; image 9: two at 0 degrees, one at 180
    reference_keypoints = np.array([[0, 0, 4, 0]] * 6, np.float32)
    query_keypoints = np.array([[0, 0, 4, 90], [0, 0, 4, 90], [0, 0, 4, 90], [0, 0, 4, 0], [0, 0, 4, 0],
                                [0, 0, 4, 180]], np.float32)
    found = ballot(build_vocabulary(references), row_image, references, query_keypoints, reference_keypoints)
    assert found.images.tolist()[:2] == [7, 9] or set(found.images.tolist()) == {7, 9}
    by_image = {image: sorted(found.query_rows[found.match_images == image].tolist()) for image in (7, 9)}
    assert by_image == {7: [0, 1, 2], 9: [3, 4]}  # the 180-degree match voted outside 9's winning bin
    assert sorted(found.reference_rows[found.match_images == 7].tolist()) == [0, 1, 2]
    assert found.totals.dtype == np.float32 and len(found.query_rows) == len(found.reference_rows)


def test_position_bins_keep_only_matches_that_put_the_pin_in_one_place() -> None:
    from pinid.local.vote import VoteConfig, ballot

    rng = np.random.default_rng(5)
    offsets = np.array([[-0.3, -0.2], [0.25, -0.1], [0.0, 0.3], [0.35, 0.35], [-0.2, 0.1]])
    references = rng.integers(0, 256, (10, DESCRIPTOR_DIMS)).astype(np.uint8)
    row_image = np.repeat([7, 9], 5)
    # in the pin's frame: offset from its centre and size in units of its long side; angle in degrees
    reference_keypoints = np.c_[np.tile(offsets, (2, 1)), np.full(10, 0.02), np.full(10, 10.0)].astype(np.float32)
    turn, long_side, centre = np.deg2rad(30.0), 200.0, np.array([300.0, 220.0])
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    placed = centre + long_side * offsets @ rotation.T  # image 7: one pin, turned 30 degrees, 200 px long
    scattered = np.array([[40.0, 900.0], [700.0, 60.0], [950.0, 950.0], [80.0, 80.0], [500.0, 600.0]])
    query_keypoints = np.c_[np.r_[placed, scattered], np.full(10, 0.02 * long_side), np.full(10, 40.0)]
    query_keypoints = query_keypoints.astype(np.float32)  # image 9: the same turn and size, anywhere
    vocabulary = build_vocabulary(references)

    def winning(config: VoteConfig) -> dict[int, int]:
        found = ballot(vocabulary, row_image, references, query_keypoints, reference_keypoints, config=config)
        return {image: int((found.match_images == image).sum()) for image in (7, 9)}

    assert VoteConfig().translation_bin_share > 0
    assert winning(VoteConfig()) == {7: 5, 9: 1}
    assert winning(VoteConfig(translation_bin_share=0.0))[9] >= 5  # turn and size alone: all five agree


def test_an_inverted_vocabulary_searched_over_every_list_is_exact_and_its_probe_count_can_change() -> None:
    """Codes are stored as they are: coded as offsets from their list's centre (FAISS's default), 8-bit
    direct codes clip and even every list searched misses true neighbours."""
    from pinid.local.vocabulary import Vocabulary
    from pinid.local.vote import VoteConfig

    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (4000, DESCRIPTOR_DIMS)).astype(np.uint8)
    shard = build_vocabulary(data, config=VoteConfig(exact_search_max_descriptors=0))  # an inverted file
    # photo codes are uint8 as the vocabulary's are (8-bit direct coding reads a query's values as bytes)
    queries = np.clip(np.round(data[:200] + rng.normal(0, 20, (200, DESCRIPTOR_DIMS))), 0, 255).astype(np.float32)
    exact = np.argmin(((queries[:, None, :] - data[None].astype(np.float32)) ** 2).sum(axis=2), axis=1)
    vocabulary = Vocabulary([shard], probes=1)
    assert vocabulary.probes == 1
    _, one_list = vocabulary.search(queries, 1)
    vocabulary.probes = shard.nlist  # every list: exact
    _, every_list = vocabulary.search(queries, 1)
    assert vocabulary.probes == shard.nlist
    assert (every_list[:, 0] == exact).all() and (one_list[:, 0] != exact).any()


def test_each_row_is_owned_by_its_image_across_segments_and_removed_images_own_none(tmp_path) -> None:
    from pinid.local.features import reference_entry
    from pinid.local.store import LocalStore, Segment, copy_segment, segment_name, write_segment
    from tests.support import pin

    entries = [reference_entry(pin(seed)) for seed in (1, 2, 3)]
    sizes = [len(entry.features) for entry in entries]
    first_rows, _ = write_segment(tmp_path / "old" / segment_name(0), [(7, entries[0]), (9, entries[1])])
    second_rows, _ = write_segment(tmp_path / "local" / segment_name(1), [(12, entries[2])])
    # image 7 removed: its segment carried over without it, its rows left in place
    copy_segment(tmp_path / "old" / segment_name(0), tmp_path / "local" / segment_name(0), keep=frozenset({9}))
    segments = [Segment(segment_name(0), 0, first_rows), Segment(segment_name(1), first_rows, second_rows)]
    store = LocalStore.load(tmp_path / "local", segments)
    expected = np.repeat([-1, 9, 12], sizes)
    every = np.arange(len(expected))
    assert store.row_image[every].tolist() == expected.tolist()
    scattered = np.array([[len(expected) - 1, 0], [sizes[0], sizes[0] - 1]])
    assert store.row_image[scattered].tolist() == [[12, -1], [9, -1]]
    assert np.flatnonzero(store.row_image[every] < 0).tolist() == store.dead_rows().tolist()

    alone = LocalStore.load(tmp_path / "local", segments[:1])  # one segment: the lookup that skips the search
    assert alone.row_image[np.arange(first_rows)].tolist() == expected[:first_rows].tolist()
    frames = alone.vote_keypoints[np.array([[0, sizes[0]]])]
    assert frames.shape == (1, 2, 4) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames[0], store.vote_keypoints[np.array([0, sizes[0]])])


def test_a_ballot_keeps_each_images_nearest_neighbour_of_each_descriptor() -> None:
    from pinid.local.vote import first_of_each_image

    rng = np.random.default_rng(3)
    images = rng.integers(-1, 6, (200, 24))
    brute = np.zeros(images.shape, bool)
    for row in range(images.shape[0]):
        seen = set()
        for column, image in enumerate(images[row].tolist()):
            brute[row, column] = image >= 0 and image not in seen
            seen.add(image)
    assert np.array_equal(first_of_each_image(images), brute)
    assert first_of_each_image(np.array([[4, 4, -1, 2, 4, 2]])).tolist() == [[True, False, False, True, False, False]]
    assert first_of_each_image(np.zeros((0, 8), np.int64)).shape == (0, 8)
