"""The Recogniser and its LocalConfig (pinid.identify.recogniser), over a store built without an index."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from pinid.errors import IndexFormatError
from pinid.identify.confidence import RANKING_FEATURES, Calibration, default_calibration
from pinid.identify.pin_table import PinRow, PinTable
from pinid.identify.recogniser import CandidateConfig, LocalConfig, Recogniser
from pinid.local.features import FeatureConfig, reference_entry
from pinid.local.store import LocalStore, Segment, write_local_store
from pinid.local.verify import VerifyConfig
from pinid.local.vote import Ballot, VoteConfig, build_vocabulary
from tests.support import FLAG, KITE, PERSPECTIVE, SIDE, background, pin, place, plain_pin, recolour

# image id -> (pin id, design, reference shot); pin-002-teal is a colourway of pin-002
SHOTS = {0: ("pin-001", "d1", lambda: pin(1)), 1: ("pin-002", "d2", lambda: pin(2)),
         2: ("pin-002-teal", "d2", lambda: recolour(pin(2), 150)), 3: ("pin-005", "d5", lambda: pin(5)),
         4: ("pin-006", "d6", lambda: pin(6))}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, object, PinTable]:
    folder = tmp_path_factory.mktemp("recogniser") / "local"
    descriptors = write_local_store(folder, ((i, reference_entry(shot())) for i, (_, _, shot) in SHOTS.items()))
    ids = np.array(sorted(SHOTS), np.int64)
    table = PinTable(ids, ids.copy(), {i: PinRow(pin_id, pin_id, {"design": design})
                                       for i, (pin_id, design, _) in SHOTS.items()},
                     {i: f"{pin_id}.png" for i, (pin_id, _, _) in SHOTS.items()})
    return LocalStore.load(folder, [Segment("000000", 0, len(descriptors))]), build_vocabulary(descriptors), table


def recogniser(parts: tuple[LocalStore, object, PinTable], config: LocalConfig = LocalConfig()) -> Recogniser:
    store, vocabulary, table = parts
    return Recogniser(store, vocabulary, table, default_calibration(), config)


def photo_of(shot: Image.Image, seed: int = 5) -> Image.Image:
    return Image.fromarray(place(background(seed=seed), shot, PERSPECTIVE))


# ---------------------------------------------------------------- the config's JSON form
def test_local_config_round_trips_through_json() -> None:
    default = LocalConfig()
    assert LocalConfig.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    assert set(default.to_dict()) == {"features", "vote", "verify", "candidates"}
    tuned = LocalConfig(features=FeatureConfig(max_reference_features=500, tilt_directions_deg=(0, 90)),
                        vote=VoteConfig(neighbours_per_descriptor=32), verify=VerifyConfig(min_inliers=6),
                        candidates=CandidateConfig(max_tries=20, same_pin_overlap_above=0.5))
    assert LocalConfig.from_dict(json.loads(json.dumps(tuned.to_dict()))) == tuned
    # an older manifest: missing sections and settings take today's defaults
    assert LocalConfig.from_dict({}) == default
    partial = LocalConfig.from_dict({"verify": {"min_inliers": 6}})
    assert partial == dataclasses.replace(default, verify=VerifyConfig(min_inliers=6))


@pytest.mark.parametrize("data, message", [
    ({"colour": {}}, "unknown section"),
    ({"candidates": {"max_candidate": 3}}, "candidates: unknown setting"),
    ({"candidates": {"max_tries": 0}}, "at least 1"),
    ({"features": {"query_long_side_px": "1024"}}, "features.query_long_side_px"),
    ({"vote": []}, "vote is not a JSON object"),
    ("features", "not a JSON object"),
])
def test_unknown_or_damaged_settings_are_refused(data: object, message: str) -> None:
    with pytest.raises(IndexFormatError, match=message):
        LocalConfig.from_dict(data)


def test_candidate_settings_have_defaults_of_their_declared_type() -> None:
    for field in dataclasses.fields(CandidateConfig):
        assert field.type == type(field.default).__name__, field.name


# ---------------------------------------------------------------- the config reaches the answer
def test_default_recogniser_identifies_a_photo(parts) -> None:
    answer = recogniser(parts).identify(photo_of(pin(5)), k=2)
    assert answer.matches[0].pin_id == "pin-005" and not answer.unknown


def test_candidate_limit_bounds_the_tries_verified(parts, monkeypatch) -> None:
    photo = photo_of(pin(5))
    everything, _ = recogniser(parts).candidates(photo)
    assert len(everything) == len(SHOTS)  # 70 tries by default: every reference image is verified
    few = recogniser(parts, LocalConfig(candidates=CandidateConfig(max_tries=2, glance_candidates=0)))
    tries: list[tuple[int, bool]] = []
    real = few._verify
    monkeypatch.setattr(few, "_verify", lambda pairs, *rest: tries.extend(pairs) or real(pairs, *rest))
    ranked, _ = few.candidates(photo)
    # two tries (an image and an orientation each); an image both votes name may take both
    assert len(tries) == 2 and ranked[0].design == "d5" and {c.image_id for c in ranked} == {i for i, _ in tries}
    assert len(recogniser(parts).candidates(photo, limit=1)[0]) == 1  # an explicit limit still wins


def test_colourway_sources_setting_controls_borrowed_alignments(parts) -> None:
    photo = photo_of(pin(2), seed=7)
    ranked, _ = recogniser(parts).candidates(photo, limit=1)
    # only pin-002 itself was verified; its colourway borrowed its alignment and was judged by colour
    assert [c.image_id for c in ranked] == [1, 2]
    own, borrowed = ranked[0].verification, ranked[1].verification
    assert borrowed.aligned and borrowed.inliers == own.inliers and borrowed.matches == own.matches
    assert np.array_equal(borrowed.query_inliers, own.query_inliers)
    assert borrowed.colour_distance > own.colour_distance + 10
    none = LocalConfig(candidates=CandidateConfig(max_colourway_sources=0))
    assert [c.image_id for c in recogniser(parts, none).candidates(photo, limit=1)[0]] == [1]


def test_colourways_of_one_design_share_one_alignment_and_colour_decides(parts) -> None:
    teal = photo_of(recolour(pin(2), 150), seed=7)
    ranked, _ = recogniser(parts).candidates(teal)
    by_image = {c.image_id: c for c in ranked}
    plain, right = by_image[1], by_image[2]
    # one alignment (the design's strongest) for both colourways: same inliers, same outline, same vote
    assert plain.aligned and right.aligned
    assert plain.verification.distinct_inliers == right.verification.distinct_inliers
    assert np.allclose(plain.verification.polygon, right.verification.polygon)
    assert plain.votes == right.votes
    assert right.verification.colour_distance + 10 < plain.verification.colour_distance
    assert ranked[0].image_id == 2
    # on a board two colourways may lie side by side: each keeps its own alignment there
    rec = recogniser(parts)
    lab = np.zeros((8, 8, 3), np.uint8)
    own = [dataclasses.replace(plain.verification, image_id=1, distinct_inliers=9),
           dataclasses.replace(right.verification, image_id=2, distinct_inliers=5)]
    board, shared = rec._with_colourways(own, lab, single_pin=False)
    assert shared == {} and [v.distinct_inliers for v in board] == [9, 5]
    single, shared = rec._with_colourways(own, lab, single_pin=True)
    assert shared == {2: 1} and [v.distinct_inliers for v in single] == [9, 9]


def test_on_a_board_every_aligned_designs_colourways_are_checked(parts) -> None:
    # a board holds several pins: the design aligned with the fewest inliers (d2, fourth of four) may be one of
    # them, and its colourway must be there to compete with it
    ranked, _ = recogniser(parts).candidates(photo_of(pin(2), seed=7))
    alignment = next(c.verification for c in ranked if c.image_id == 1)
    assert alignment.aligned
    lab = np.zeros((8, 8, 3), np.uint8)
    found = [dataclasses.replace(alignment, image_id=image_id, distinct_inliers=inliers)
             for image_id, inliers in ((0, 12), (3, 11), (4, 10), (1, 9))]
    board, shared = recogniser(parts)._with_colourways(found, lab, single_pin=False)
    assert [v.image_id for v in board] == [0, 3, 4, 1, 2] and shared == {2: 1}
    single, shared = recogniser(parts)._with_colourways(found, lab, single_pin=True)  # three sources
    assert [v.image_id for v in single] == [0, 3, 4, 1] and shared == {}
    few = LocalConfig(candidates=CandidateConfig(max_board_colourway_sources=3))
    assert [v.image_id for v in recogniser(parts, few)._with_colourways(found, lab)[0]] == [0, 3, 4, 1]
    with pytest.raises(ValueError, match="max_board_colourway_sources"):
        CandidateConfig(max_board_colourway_sources=-1)


def test_strict_verification_aligns_nothing(parts) -> None:
    strict = recogniser(parts, LocalConfig(verify=VerifyConfig(min_inliers=10_000, similarity_fallback=0)))
    ranked, _ = strict.candidates(photo_of(pin(5)))
    assert ranked and not any(c.aligned for c in ranked)
    answer = strict.identify(photo_of(pin(5)))
    # the shipped calibration gives the vote alone a little weight (12 % for the leading vote, with the vote by
    # pose and the ranking fitted photo by photo)
    assert answer.unknown and answer.confidence < 0.2
    assert strict.find_all(photo_of(pin(5))) == []


# ---------------------------------------------------------------- evidence fusion
def clip_trusting() -> Calibration:
    """What a calibration learns on an index whose CLIP is informative: a clear CLIP lead is worth a lot."""
    weights = {"aligned": 4.0, "log_distinct_inliers": 2.6, "inlier_ratio": 6.4, "colour_distance": -0.84,
               "clip_cosine": 0.0, "clip_margin": 30.0, "vote_share": 0.5, "glance": 0.0,
               "structure": 0.0}
    return Calibration((-6.0, *(weights.get(name, 0.0) for name in RANKING_FEATURES)), (-0.3, 0.8, 0.4), 0.5,
                       "test")


def test_unaligned_candidates_are_ranked_by_clip_and_a_clear_clip_leader_is_the_answer(parts) -> None:
    strict = LocalConfig(verify=VerifyConfig(min_inliers=10_000, similarity_fallback=0))  # nothing can align
    clip = [(3, 0.93), (0, 0.71), (4, 0.69), (1, 0.52)]  # CLIP: pin-005, clearly ahead
    photo = photo_of(pin(5))
    store, vocabulary, table = parts
    trusting = Recogniser(store, vocabulary, table, clip_trusting(), strict)
    ranked, _ = trusting.candidates(photo, clip)
    assert not any(c.aligned for c in ranked)
    assert [c.image_id for c in ranked][:3] == [3, 0, 4]  # by CLIP evidence, not a flat score
    answer = trusting.identify(photo, clip)
    assert answer.matches[0].pin_id == "pin-005" and answer.matches[0].similarity == pytest.approx(0.93)
    assert not answer.unknown and answer.confidence > 0.9
    # the same evidence with the leader's margin gone: no longer sure
    close = trusting.identify(photo, [(3, 0.72), (0, 0.71), (4, 0.69), (1, 0.52)])
    assert close.confidence < answer.confidence and close.unknown
    # a calibration that learned nothing from CLIP (the shipped one: local features only) says unknown
    shipped = Recogniser(store, vocabulary, table, default_calibration(), strict).identify(photo, clip)
    assert shipped.unknown and shipped.confidence < 0.2


def test_an_aligned_candidate_with_strong_geometry_beats_a_clip_leader(parts) -> None:
    store, vocabulary, table = parts
    trusting = Recogniser(store, vocabulary, table, clip_trusting())
    answer = trusting.identify(photo_of(pin(5)), [(0, 0.8), (3, 0.7), (4, 0.69)])  # CLIP wrongly prefers pin-001
    assert answer.matches[0].pin_id == "pin-005" and answer.matches[0].inliers >= 8


def test_excluded_reference_images_are_never_candidates(parts) -> None:
    """Self-calibration's leave-pins-out: as if the pin were not in the index (colourway siblings too)."""
    rec = recogniser(parts)
    ranked, _ = rec.candidates(photo_of(pin(5)), [(3, 0.9), (0, 0.5)], exclude={3})
    assert ranked and 3 not in {c.image_id for c in ranked}
    assert all(c.design != "d5" for c in ranked)
    # pin-002's alignment is not lent to its excluded colourway
    ranked, _ = rec.candidates(photo_of(pin(2), seed=7), limit=1, exclude={2})
    assert [c.image_id for c in ranked] == [1]


# ---------------------------------------------------------------- mirrors and the cheap first check
def test_a_mirrored_photo_is_identified_and_outlined_where_the_pin_is(parts) -> None:
    from PIL import ImageOps

    photo = photo_of(pin(5))
    mirrored = ImageOps.mirror(photo)
    rec = recogniser(parts)
    as_taken, flipped = rec.identify(photo, k=1), rec.identify(mirrored, k=1)
    assert flipped.matches[0].pin_id == "pin-005" and not flipped.unknown
    assert flipped.matches[0].inliers >= 0.6 * as_taken.matches[0].inliers
    # the outline is the as-taken outline mirrored (same corners, in the mirrored photo's pixels)
    expected = np.array(as_taken.matches[0].polygon) * [-1, 1] + [photo.width - 1, 0]
    found = np.array(flipped.matches[0].polygon)
    assert min(np.abs(found - np.roll(expected, shift, axis=0)).max() for shift in range(4)) < 12
    # and the photo as taken still aligns upright, with no fewer inliers than before mirrors were tried
    ranked, _ = rec.candidates(photo)
    assert ranked[0].image_id == 3 and ranked[0].verification.distinct_inliers >= 8


def test_screening_orders_candidates_by_the_cheap_check(parts) -> None:
    photo = photo_of(pin(5))
    screened, _ = recogniser(parts).candidates(photo, limit=1)
    assert [c.image_id for c in screened][:1] == [3]  # the one verified is the right one
    unscreened = LocalConfig(candidates=CandidateConfig(screened_candidates=0))
    assert recogniser(parts, unscreened).candidates(photo, limit=1)[0][0].image_id == 3  # vote order agrees here
    with pytest.raises(ValueError, match="screened_candidates"):
        CandidateConfig(screened_candidates=-1)


def test_a_mirrored_photo_the_cheap_check_missed_is_found_by_its_mirror_images_vote(parts) -> None:
    """Most photos leave the cheap check unsure of the orientation: both votes' best are verified anyway."""
    from PIL import ImageOps

    photo = photo_of(pin(5))
    mirrored = ImageOps.mirror(photo)
    blind = CandidateConfig(screen_min_inliers=1000)  # the cheap check never finds anything

    def found(config: CandidateConfig, image: Image.Image = mirrored) -> bool:
        ranked, _ = recogniser(parts, LocalConfig(candidates=config)).candidates(image)
        return bool(ranked) and ranked[0].image_id == 3 and ranked[0].aligned \
            and ranked[0].verification.distinct_inliers >= 6

    assert found(blind) and found(blind, photo)
    assert found(CandidateConfig()) and found(CandidateConfig(), photo)


def _fake_ballot(images: dict[int, float]) -> Ballot:
    nothing = np.zeros(0, np.int64)
    order = sorted(images, key=lambda image_id: -images[image_id])
    return Ballot(np.array(order, np.int64), np.array([images[i] for i in order], np.float32), nothing, nothing,
                  nothing)


def test_both_votes_make_one_list_of_tries_each_image_in_the_orientation_that_voted(parts, monkeypatch) -> None:
    import pinid.identify.recogniser as module

    rec = recogniser(parts)
    own, other = {0: 3.0, 1: 2.0}, {3: 4.0, 1: 5.0, 2: 1.0}
    features, mirror = module.query_feature_pair(photo_of(pin(5)))
    # the photo's vote and its mirror image's (which is cast on a worker thread, perhaps first)
    ballots = {id(features.descriptors): _fake_ballot(own), id(mirror.descriptors): _fake_ballot(other)}
    monkeypatch.setattr(module, "ballot", lambda _vocabulary, _rows, descriptors, *args, **kwargs:
                        ballots[id(descriptors)])
    votes, tries, mirrored = rec._screen(features, mirror, frozenset({2}))
    assert votes == {0: 3.0, 1: 5.0, 3: 4.0}  # 2 excluded; 1 at the larger of its two votes
    assert tries == [(1, True), (3, True), (0, False), (1, False)]  # by votes, whichever orientation gave them
    assert not mirrored  # no cheap-check evidence: what no vote brought is tried as taken
    # the mirrored photo's votes are the photo's swapped: the same list, each try the other way round
    ballots.update({id(features.descriptors): _fake_ballot(other), id(mirror.descriptors): _fake_ballot(own)})
    swapped_votes, swapped_tries, _ = rec._screen(features, mirror, frozenset({2}))
    assert swapped_votes == votes and swapped_tries == [(image_id, not flip) for image_id, flip in tries]
    # the cheap check finds image 3 in the mirror image (8 inliers, none as taken): it goes first, and the photo
    # is clearly mirrored (what no vote brought is tried mirrored)
    ballots.update({id(features.descriptors): _fake_ballot(own), id(mirror.descriptors): _fake_ballot(other)})
    inliers = [0, 0, 0, 8]  # own 0, own 1, then the mirror's 1 and 3, in vote order (2 is excluded)
    monkeypatch.setattr(module, "quick_inliers", lambda *args, **kwargs: inliers.pop(0))
    votes, tries, mirrored = rec._screen(features, mirror, frozenset({2}))
    assert tries == [(3, True), (1, True), (0, False), (1, False)] and mirrored


def test_each_try_is_verified_in_its_own_orientation(parts, monkeypatch) -> None:
    from PIL import ImageOps

    # (1,500 keypoints, as written: with 1,000 this busy photo keeps 6 distinct inliers mirrored, 3 as taken)
    rec = recogniser(parts, LocalConfig(candidates=CandidateConfig(glance_candidates=0),
                                        features=FeatureConfig(max_query_features=1500)))
    mirrored = ImageOps.mirror(photo_of(pin(5)))

    def tried(tries: list[tuple[int, bool]]) -> dict[int, object]:
        monkeypatch.setattr(rec, "_screen", lambda *args: ({0: 3.0, 3: 2.0, 1: 1.0}, tries, False))
        return {c.image_id: c for c in rec.candidates(mirrored, limit=len(tries))[0]}

    found = tried([(0, False), (3, True), (1, False)])
    assert found[3].aligned and found[3].verification.distinct_inliers >= 6  # verified mirrored: aligns
    as_taken = tried([(0, False), (3, False), (1, False)])[3].verification
    # as taken only chance agrees (this pin is nearly symmetric: a few inliers)
    assert as_taken.distinct_inliers < found[3].verification.distinct_inliers / 2
    both = tried([(3, False), (0, False), (3, True)])  # tried both ways: the stronger counts, once
    assert both[3].aligned and list(both).count(3) == 1


def test_verification_stops_after_the_first_tries_when_one_aligns_beyond_doubt(parts, monkeypatch) -> None:
    def tries_verified(config: CandidateConfig, board: bool = False) -> list[int]:
        rec = recogniser(parts, LocalConfig(candidates=config))
        sizes: list[int] = []
        real = rec._verify
        monkeypatch.setattr(rec, "_verify", lambda pairs, *rest: sizes.append(len(pairs)) or real(pairs, *rest))
        ranked, _ = rec.candidates(photo_of(pin(5)), board=board)
        assert ranked[0].image_id == 3 and ranked[0].verification.distinct_inliers >= 6
        return sizes

    # pin 5 came first and aligned (the glance's tries would go in with the first one)
    assert tries_verified(CandidateConfig(first_tries=1, sure_inliers=6, glance_tries_first=0)) == [1]
    everything = tries_verified(CandidateConfig(first_tries=1, sure_inliers=1000, glance_tries_first=0))
    assert everything[0] == 1 and sum(everything) > 1  # not sure: the rest too
    assert tries_verified(CandidateConfig(first_tries=1, sure_inliers=0)) == [sum(everything)]  # 0: never stops
    board = tries_verified(CandidateConfig(first_tries=1, sure_inliers=6), board=True)
    assert len(board) == 1 and board[0] > 1  # a board is verified all at once: one pin found says nothing of the rest


def test_settings_written_on_a_command_line_change_a_config_and_are_checked_as_a_manifest_is() -> None:
    changed = LocalConfig().with_settings(["candidates.max_tries=12", "features.reference_view_long_sides_px=[64]",
                                           "verify.max_illumination_tint=1.5"])
    assert changed.candidates.max_tries == 12 and changed.features.reference_view_long_sides_px == (64,)
    assert changed.verify.max_illumination_tint == 1.5 and changed.vote == LocalConfig().vote
    assert LocalConfig().with_settings([]) == LocalConfig()
    for bad, message in (("candidates.max_tries", "no SECTION.NAME=VALUE"), ("max_tries=3", "no SECTION.NAME"),
                         ("candidate.max_tries=3", "no SECTION.NAME"), ("candidates.max_triez=3", "unknown setting"),
                         ("candidates.max_tries=many", "not a number"), ("candidates.max_tries=0", "at least 1"),
                         ("candidates.max_tries=2.5", "whole number")):
        with pytest.raises(IndexFormatError, match=message):
            LocalConfig().with_settings([bad])


def test_retired_candidate_settings_of_older_indexes_are_read_and_dropped() -> None:
    old = {"unclear_mirror_candidates": 15, "unclear_mirror_min_inliers": 5, "mirror_fallback_candidates": 0,
           "max_candidates": 40, "screen_min_inliers": 7}
    config = CandidateConfig.from_dict(old)
    assert config.screen_min_inliers == 7 and config.max_tries == CandidateConfig().max_tries
    assert not {"unclear_mirror_candidates", "max_candidates"} & set(config.to_dict())
    with pytest.raises(IndexFormatError, match="unknown setting"):
        CandidateConfig.from_dict({"unclear_mirror_candidatez": 15})


def test_the_glance_brings_in_a_pin_the_vote_gave_nothing(parts, monkeypatch) -> None:
    plain_table = np.full((540, 720, 3), (92, 78, 64), np.uint8)
    photo = Image.fromarray(place(plain_table, pin(5), PERSPECTIVE))
    silent = recogniser(parts)
    monkeypatch.setattr(silent, "_screen", lambda *args: ({}, [], False))  # no reference image got a vote
    ranked, _ = silent.candidates(photo, limit=5)
    # a fifth of 5 candidates: the one nearest glance, and it is verified like any other
    assert [c.image_id for c in ranked] == [3] and ranked[0].aligned and ranked[0].votes == 0.0
    assert silent.candidates(photo, limit=4)[0] == []  # a fifth of 4 is none
    off = recogniser(parts, LocalConfig(candidates=CandidateConfig(glance_candidates=0)))
    monkeypatch.setattr(off, "_screen", lambda *args: ({}, [], False))
    assert off.candidates(photo, limit=5)[0] == []
    assert [c.image_id for c in silent.candidates(photo, limit=5, exclude=[3])[0]] != [3]
    with pytest.raises(ValueError, match="glance_candidates"):
        CandidateConfig(glance_candidates=-1)


def plain_parts(tmp_path) -> tuple[LocalStore, object, PinTable]:
    """A three-pin catalogue: a plain flag (0), a plain kite (1) and a keypoint-rich pin (2)."""
    shots = {0: plain_pin(FLAG)[0], 1: plain_pin(KITE, (40, 60, 200))[0], 2: pin(1)}
    folder = tmp_path / "local"
    descriptors = write_local_store(folder, ((i, reference_entry(shot)) for i, shot in shots.items()))
    ids = np.array(sorted(shots), np.int64)
    table = PinTable(ids, ids.copy(), {i: PinRow(f"pin-{i}", f"pin-{i}", {"design": f"d{i}"}) for i in shots},
                     {i: f"pin-{i}.png" for i in shots})
    return LocalStore.load(folder, [Segment("000000", 0, len(descriptors))]), build_vocabulary(descriptors), table


def test_a_plain_pin_that_keypoints_cannot_align_is_identified_by_its_outline(tmp_path) -> None:
    """A flag-shaped pin of one enamel field gives the vote and verification nothing; the glance brings it in
    and its outline aligns it, as taken or mirrored. Without the outline step nothing aligns."""
    parts = plain_parts(tmp_path)
    shot, mask = plain_pin(FLAG)
    sheared = np.array([[0.74, -0.33, 300.0], [0.52, 0.21, 150.0], [0.0, 0.0, 1.0]])
    mirror = np.array([[-1.0, 0.0, SIDE], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for placed in (sheared, sheared @ mirror):
        photo = Image.fromarray(place(np.full((540, 720, 3), (60, 120, 70), np.uint8), shot, placed, mask))
        ranked, _ = recogniser(parts).candidates(photo)
        assert ranked[0].image_id == 0 and ranked[0].aligned and ranked[0].verification.outline_only
        assert not any(c.aligned for c in ranked if c.image_id == 1)  # the kite's outline is not the flag's
        off = recogniser(parts, LocalConfig(candidates=CandidateConfig(outline_candidates=0)))
        assert not any(c.aligned for c in off.candidates(photo)[0])
    with pytest.raises(ValueError, match="outline_candidates"):
        CandidateConfig(outline_candidates=-1)


def test_each_pin_of_a_board_is_also_identified_on_its_own(tmp_path) -> None:
    """A board's plain pin gives the board-wide keypoints nothing; cut out as a single-pin photo, its outline
    aligns it. Both pins are found where they lie, each once; without the regions the plain one is missed."""
    from pinid.evaluation.boards import polygon_iou

    parts = plain_parts(tmp_path)
    flag, mask = plain_pin(FLAG)
    at_flag = np.array([[0.62, -0.28, 80.0], [0.44, 0.18, 300.0], [0.0, 0.0, 1.0]])
    at_pin = np.array([[0.7, -0.2, 560.0], [0.2, 0.7, 90.0], [0.0, 0.0, 1.0]])
    board = np.full((600, 960, 3), (60, 120, 70), np.uint8)
    board = Image.fromarray(place(place(board, flag, at_flag, mask), pin(1), at_pin))
    found = recogniser(parts).find_all(board, min_confidence=0.0)
    by_pin = {f.match.pin_id: f for f in found}
    assert sorted(by_pin) == ["pin-0", "pin-2"] and len(found) == 2
    box = np.float32([[24, 24], [SIDE - 24, 24], [SIDE - 24, SIDE - 24], [24, SIDE - 24]]).reshape(-1, 1, 2)
    for pin_id, placed, corners in (("pin-0", at_flag, np.float32(FLAG)), ("pin-2", at_pin, box.reshape(-1, 2))):
        truth = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), placed).reshape(-1, 2)
        assert polygon_iou(by_pin[pin_id].polygon, truth) > 0.5
        assert np.allclose(by_pin[pin_id].match.polygon, by_pin[pin_id].polygon, atol=0.06)  # one outline
    assert found[0].confidence >= found[1].confidence
    # the finds at a threshold are those at 0 that reach it
    middle = (found[0].confidence + found[1].confidence) / 2
    above = [(f.match.pin_id, f.confidence) for f in recogniser(parts).find_all(board, min_confidence=middle)]
    assert above == [(f.match.pin_id, f.confidence) for f in found if f.confidence >= middle] and len(above) == 1
    board_wide = recogniser(parts, LocalConfig(candidates=CandidateConfig(board_regions=0)))
    assert [f.match.pin_id for f in board_wide.find_all(board, min_confidence=0.0)] == ["pin-2"]
    with pytest.raises(ValueError, match="board_regions"):
        CandidateConfig(board_regions=-1)


def test_a_board_wide_find_that_no_region_covers_is_cut_out_and_identified_too(tmp_path, monkeypatch) -> None:
    """A pin that shares the backdrop's colours does not stand out as a region; where the board-wide pass
    found something, that place is cut out and identified as a single-pin photo all the same."""
    from pinid.identify import recogniser as module

    parts = plain_parts(tmp_path)
    at_pin = np.array([[0.7, -0.2, 560.0], [0.2, 0.7, 90.0], [0.0, 0.0, 1.0]])
    board = Image.fromarray(place(np.full((600, 960, 3), (60, 120, 70), np.uint8), pin(1), at_pin))
    rec = recogniser(parts)
    cuts: list[tuple[int, int]] = []
    real = rec.candidates
    monkeypatch.setattr(rec, "candidates", lambda image, *a, **k: (cuts.append(image.size) if not k.get("board")
                                                                   else None) or real(image, *a, **k))
    monkeypatch.setattr(module, "pin_regions", lambda rgb, most: [])  # nothing stands out
    (outline,) = [f.polygon for f in rec.find_all(board, min_confidence=0.0)]
    assert len(cuts) == 1  # the board-wide find's place, cut out
    cuts.clear()
    (again,) = rec._found_by_region(board, [outline])
    assert again.match.pin_id == "pin-2" and module._overlap(again.polygon, outline) > 0.8 and len(cuts) == 1
    outside = outline + np.float32([2000, 0])  # an outline off the photo is no place to cut
    assert rec._found_by_region(board, [outside]) == [] and len(cuts) == 1
    # a place a region already covers is cut out once, as that region
    x0, y0 = outline.min(axis=0)
    x1, y1 = outline.max(axis=0)
    monkeypatch.setattr(module, "pin_regions", lambda rgb, most: [(int(x0), int(y0), int(x1), int(y1))])
    cuts.clear()
    assert len(rec._found_by_region(board, [outline])) == 1 and len(cuts) == 1
    none = recogniser(parts, LocalConfig(candidates=CandidateConfig(board_found_cuts=0)))
    monkeypatch.setattr(module, "pin_regions", lambda rgb, most: [])
    assert none._found_by_region(board, [outline]) == []
    with pytest.raises(ValueError, match="board_found_cuts"):
        CandidateConfig(board_found_cuts=-1)


def test_where_the_board_and_the_cut_out_pin_disagree_each_is_right_only_if_the_other_is_wrong() -> None:
    from pinid.identify.recogniser import _weighed_against
    from pinid.results import Found, Match

    def found(pin_id: str, confidence: float, x: float) -> Found:
        square = np.float32([[x, 0], [x + 100, 0], [x + 100, 100], [x, 100]])
        return Found(Match(1, pin_id, pin_id, {}, f"{pin_id}.png"), confidence, square)

    board_wide = [found("a", 0.9, 0), found("b", 0.8, 300), found("c", 0.7, 600)]
    by_region = [found("z", 0.6, 10), found("b", 0.95, 305)]  # another pin where "a" is; the same pin as "b"
    weighed = _weighed_against(board_wide, by_region, 0.3)
    assert [f.confidence for f in weighed] == pytest.approx([0.9 * 0.4, 0.8, 0.7])
    assert [f.confidence for f in _weighed_against(by_region, board_wide, 0.3)] == pytest.approx([0.6 * 0.1, 0.95])


def test_glance_candidates_go_in_after_the_votes_first_four_fifths(parts, monkeypatch) -> None:
    voting = recogniser(parts)
    votes = {0: 9.0, 1: 8.0, 2: 7.0, 4: 6.0, 3: 5.0}
    monkeypatch.setattr(voting, "_screen", lambda *args: (votes, [(image_id, False) for image_id in votes], False))
    monkeypatch.setattr(voting, "_glance", lambda rgb, count, excluded: [3, 0][:count])
    verified = []
    monkeypatch.setattr(voting, "_verify", lambda order, *args: verified.append(list(order)) or [])
    voting.candidates(photo_of(pin(5)), limit=5)
    as_taken = [(image_id, False) for image_id in (0, 1, 2, 4, 3)]
    assert verified == [as_taken + [(3, True)]]  # four from the vote, then the glance's first, both ways round
    verified.clear()
    voting.candidates(photo_of(pin(5)), limit=10)
    assert verified == [as_taken + [(3, True), (0, True)]]  # what the vote brought already: only the other way


def test_the_glances_tries_are_verified_with_the_first_so_that_a_sure_alignment_cannot_skip_them(
        parts, monkeypatch) -> None:
    def verified(config: CandidateConfig) -> list[list[tuple[int, bool]]]:
        rec = recogniser(parts, LocalConfig(candidates=config))
        votes = {3: 9.0, 0: 8.0, 1: 7.0, 2: 6.0, 4: 5.0}  # pin 5's image (3) first: it aligns beyond doubt
        monkeypatch.setattr(rec, "_screen", lambda *args: (votes, [(image_id, False) for image_id in votes], False))
        monkeypatch.setattr(rec, "_glance", lambda rgb, count, excluded: [4, 1][:count])
        calls: list[list[tuple[int, bool]]] = []
        real = rec._verify
        monkeypatch.setattr(rec, "_verify", lambda pairs, *rest: calls.append(list(pairs)) or real(pairs, *rest))
        ranked, _ = rec.candidates(photo_of(pin(5)), limit=10)
        assert ranked[0].image_id == 3 and ranked[0].verification.distinct_inliers >= 6
        return calls

    sure_early = {"first_tries": 2, "sure_inliers": 6}
    # the tries: the vote's five as taken, then the glance's two finds the other way round
    assert verified(CandidateConfig(**sure_early, glance_tries_first=0)) == [[(3, False), (0, False)]]
    assert verified(CandidateConfig(**sure_early)) == [[(3, False), (0, False), (1, False), (4, False), (4, True),
                                                        (1, True)]]
    # not sure after them: the rest follow
    unsure = verified(CandidateConfig(first_tries=2, sure_inliers=1000))
    assert unsure[1] == [(2, False)]
    with pytest.raises(ValueError, match="glance_tries_first"):
        CandidateConfig(glance_tries_first=2)


def test_what_the_glance_finds_in_a_mirrored_photo_aligns_mirrored(parts, monkeypatch) -> None:
    from PIL import ImageOps

    plain_table = np.full((540, 720, 3), (92, 78, 64), np.uint8)
    mirrored = ImageOps.mirror(Image.fromarray(place(plain_table, pin(5), PERSPECTIVE)))
    both = recogniser(parts)
    monkeypatch.setattr(both, "_screen", lambda *args: ({}, [], False))  # no votes, so not known to be mirrored
    ranked, _ = both.candidates(mirrored, limit=5)
    assert [c.image_id for c in ranked] == [3] and ranked[0].aligned and ranked[0].verification.distinct_inliers >= 6
    right_way = ranked[0].verification
    as_taken = recogniser(parts, LocalConfig(candidates=CandidateConfig(glance_mirrored_candidates=0)))
    monkeypatch.setattr(as_taken, "_screen", lambda *args: ({}, [], False))
    ranked, _ = as_taken.candidates(mirrored, limit=5)
    # tried only as taken, the mirrored pin aligns by chance at most (a few matches on its near-symmetric parts)
    wrong_way = ranked[0].verification
    assert [c.image_id for c in ranked] == [3]
    assert not wrong_way.aligned or (wrong_way.distinct_inliers * 2 < right_way.distinct_inliers
                                     and wrong_way.structure < right_way.structure - 0.3)


def test_prepare_makes_the_glances_once_so_no_answer_waits_for_them(parts, monkeypatch) -> None:
    rec = recogniser(parts)
    made: list[int] = []
    real = rec.store.thumbnails
    monkeypatch.setattr(rec.store, "thumbnails", lambda: made.append(1) or real())
    rec.prepare()
    rec.prepare()
    ranked, _ = rec.candidates(photo_of(pin(5)))
    assert made == [1] and ranked[0].image_id == 3


def test_each_candidate_carries_how_like_the_photos_pin_it_looks_and_the_ranking_can_weigh_it(parts) -> None:
    plain_table = np.full((540, 720, 3), (92, 78, 64), np.uint8)
    photo = Image.fromarray(place(plain_table, pin(5), PERSPECTIVE))
    rec = recogniser(parts)
    ranked, _ = rec.candidates(photo, limit=25)
    glance = {c.image_id: c.glance for c in ranked}
    assert len(glance) == len(SHOTS) and max(glance, key=glance.__getitem__) == 3 and glance[3] > 1.0
    # a calibration that weighs the glance alone scores each aligned candidate by it (the others by nothing)
    weights = {name: 0.0 for name in RANKING_FEATURES} | {"glance": 1.0}
    rec.calibration = Calibration((0.0, *(weights[name] for name in RANKING_FEATURES)), (-0.3, 0.8, 0.4), 0.5, "t")
    ranked, _ = rec.candidates(photo, limit=25)
    assert ranked[0].image_id == 3 and ranked[0].aligned
    assert [c.rank_score for c in ranked] == pytest.approx([c.glance if c.aligned else 0.0 for c in ranked])
    # a board photo as a whole is no one pin: each aligned candidate is glanced at where it aligned
    board, _ = rec.candidates(photo, board=True)
    assert board[0].image_id == 3 and board[0].aligned and board[0].glance > 1.0
    assert all(c.glance == 0.0 for c in board if not c.aligned)


def test_on_a_board_an_alignment_is_glanced_at_where_it_landed(parts) -> None:
    """Two pins on one board: each aligns with its own glance; an outline laid on the other pin (a chance
    alignment) looks nothing like it."""
    table = np.full((700, 1100, 3), (92, 78, 64), np.uint8)
    left = np.array([[0.8, 0.1, 60.0], [-0.1, 0.8, 150.0], [0.0, 0.0, 1.0]])
    right = np.array([[0.8, -0.1, 620.0], [0.1, 0.8, 150.0], [0.0, 0.0, 1.0]])
    board = Image.fromarray(place(place(table, pin(5), left), pin(1), right))
    rec = recogniser(parts)
    ranked, _ = rec.candidates(board, board=True)
    aligned = {c.image_id: c for c in ranked if c.aligned}
    assert {0, 3} <= set(aligned) and aligned[3].glance > 1.0 and aligned[0].glance > 1.0
    on_the_other_pin = dataclasses.replace(aligned[0].verification, image_id=3)
    assert rec._glance_where_aligned(np.asarray(board), [on_the_other_pin])[3] < aligned[3].glance - 1.0
