"""From a photo to verified, ranked, calibrated answers: single pins and whole boards.

An answer is made here and only here. Candidates come from the local-feature
vote and, when the index has an encoder, from CLIP (the caller passes the
photo's CLIP top list); the two lists are merged (alternating, best first)
and the first ``candidates`` reference images are verified
(:mod:`pinid.local.verify`). The calibrated ranking model orders them and the
confidence model says how sure the best answer is
(:mod:`pinid.identify.confidence`); the result is an ``Identification``.

Every tunable of this path is in one frozen ``LocalConfig`` (features, vote,
verification, candidate counts), which an index writes whole into its
manifest and hands back to its ``Recogniser``.
"""

from __future__ import annotations

import json
import reprlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image

from ..errors import IndexFormatError
from ..images import working_copy
from ..local.config import Config, check, unknown_names
from ..local.features import FeatureConfig, Features, query_feature_pair
from ..local.glance import (HISTOGRAM_DIMS, SHAPE_DIMS, GlanceIndex, photo_silhouette, pin_regions,
                            reference_descriptors, salient_region)
from ..local.silhouette import Silhouette
from ..local.store import LocalStore
from ..local.verify import (LabPyramid, Verification, VerifyConfig, dense_checks, outline_alignment, quick_inliers,
                            verify)
from ..local.vote import Ballot, VoteConfig, ballot
from ..results import Found, Identification, Match
from .confidence import Calibration, candidate_features, sigmoid
from .pin_table import PinTable

T = TypeVar("T")
_MIN_GLANCE_SIDE = 16  # pixels: a board's aligned outline smaller than this is not glanced at


@dataclass(frozen=True)
class CandidateConfig(Config):
    """How many (reference image, orientation) tries are verified per photo, and when two found pins are one."""

    # (image, orientation) pairs verified per single-pin photo, from CLIP, the glance and both votes (photo and
    # mirror image) in one list: 70 found as many true pins on 300 full-benchmark photos as 50 images of one vote did.
    # Once the early stop at 8 inliers saved time: 90 put 0.503 / 0.543 of 300 photos (seeds 2 / 5) first against
    # 0.493 / 0.527 at 70, at p50 357 / 369 ms against 340 / 350. Once the glance's tries went in with the first
    # (glance_tries_first), 80 with a first step of 10 answered as 90 and 15 had (300 photos, seed 7, with
    # max_query_features 1,000: 4 photos won, 4 lost) at p90 639 against 772 ms (README, "Faster answers")
    max_tries: int = 80
    max_board_candidates: int = 80  # ... per board photo
    max_colourway_sources: int = 3  # aligned candidates (of different designs) whose colourways are checked too
    # ... on a board, which holds several pins: with 3, a board's fourth design had no colourway to lose to, and
    # the wrong colourway of it was found with confidence 0.95. On the 300 full-benchmark boards every aligned
    # design's colourways moved the best recall at precision 0.95 from 0.414 to 0.432
    max_board_colourway_sources: int = 80
    same_pin_overlap_above: float = 0.3  # polygons overlapping more (intersection over the smaller) are one pin
    screened_candidates: int = 150  # of each vote (photo, mirror image), checked cheaply first (0: vote order)
    screen_min_inliers: int = 6  # cheap-check inliers that move an image ahead of the vote order
    # of a single-pin photo's candidates (at most a fifth), taken from the whole-pin glance (colours and silhouette:
    # pinid.local.glance) before the rest of the vote; it finds plain pins that give the vote nothing
    glance_candidates: int = 10
    glance_mirrored_candidates: int = 10  # of the glance's finds, tried both ways round (on top of max_tries)
    # of a single-pin photo, the glance's first finds that keypoints left unaligned get an outline alignment
    # (pinid.local.verify.outline_alignment: plain pins give SIFT too little to match); 0: none
    outline_candidates: int = 10
    # a single-pin photo whose first first_tries tries hold an alignment with sure_inliers distinct inliers or more
    # is not verified further (0: always every try). On 300 full-benchmark photos 12 answered as every try did
    # (first 0.410; one true pin fewer aligned) with p50 / p90 412 / 657 ms against 437 / 689 at 20. Once the
    # vote's four images put the true one earlier: 20 / 12 first 0.493 at 420 / 669 ms, 20 / 8 0.493 at
    # 381 / 604, 15 / 8 0.493 at 361 / 594, 20 / 6 0.483; 10 / 8 once the glance's tries go in with them
    first_tries: int = 10
    sure_inliers: int = 8
    # 1: the glance's tries are verified with the first first_tries, so that a sure alignment among those does
    # not leave them untried (0: they wait with the rest of the vote's)
    glance_tries_first: int = 1
    # of a board photo, the separate regions that stand out from its backdrop (pinid.local.glance.pin_regions),
    # largest first, each cut out with this margin (a share of its long side) and identified as a single-pin photo;
    # pooled with the board-wide candidates. On the 300 full-benchmark boards recall at confidence 0.5 went from
    # 0.403 to 0.513 at precision 0.879 to 0.860 (README, "Boards, pin by pin"); 0: the board-wide candidates only
    board_regions: int = 12
    board_region_margin: float = 0.3
    # ... and as many of the board-wide finds that no region covers (a pin whose metal or enamel shares the
    # backdrop's colours stands out in parts, or not at all: a quarter of the benchmark boards' pins), most
    # confident first, so that each board-wide find meets a single-pin opinion of the same place (0: none)
    board_found_cuts: int = 6

    # settings of older indexes: the unclear-orientation step and the mirror fallback, which one list of both votes
    # (``_screen``) replaced, and the count of images verified (each once), which ``max_tries`` replaced
    RETIRED = frozenset({"unclear_mirror_candidates", "unclear_mirror_min_inliers", "mirror_fallback_candidates",
                         "max_candidates"})

    def __post_init__(self) -> None:
        check(self.max_tries >= 1 and self.max_board_candidates >= 1,
              "max_tries and max_board_candidates must be at least 1")
        check(self.max_colourway_sources >= 0 and self.max_board_colourway_sources >= 0,
              "max_colourway_sources and max_board_colourway_sources must be at least 0")
        check(self.screened_candidates >= 0 and self.screen_min_inliers >= 0 and self.glance_candidates >= 0
              and self.glance_mirrored_candidates >= 0 and self.first_tries >= 0 and self.sure_inliers >= 0
              and self.outline_candidates >= 0 and self.board_regions >= 0 and self.board_region_margin >= 0
              and self.board_found_cuts >= 0,
              "screened_candidates, screen_min_inliers, glance_candidates, glance_mirrored_candidates, first_tries, "
              "sure_inliers, outline_candidates, board_regions, board_region_margin and board_found_cuts must be "
              "at least 0")
        check(0 <= self.same_pin_overlap_above <= 1, "same_pin_overlap_above must be in [0, 1]")
        check(self.glance_tries_first in (0, 1), "glance_tries_first must be 0 or 1")


@dataclass(frozen=True)
class LocalConfig:
    """Every tunable from a photo to a ranked answer, in the JSON form an index's manifest keeps."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    vote: VoteConfig = field(default_factory=VoteConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)

    def to_dict(self) -> dict[str, Any]:
        """``{"features": {...}, "vote": {...}, "verify": {...}, "candidates": {...}}``, every setting named."""
        return {name: getattr(self, name).to_dict() for name in _SECTIONS}

    def with_settings(self, settings: Sequence[str]) -> "LocalConfig":
        """This config with settings written ``SECTION.NAME=VALUE`` (VALUE as JSON) changed: what research
        scripts' ``--set`` takes, checked as a manifest is.

        Raises:
            IndexFormatError: a setting not written so, an unknown section or name, or a bad value.
        """
        data = self.to_dict()
        for setting in settings:
            name, equals, value = setting.partition("=")
            section, dot, key = name.partition(".")
            if not (equals and dot) or section not in data:
                raise IndexFormatError(f"{reprlib.repr(setting)} is no SECTION.NAME=VALUE setting "
                                       f"(sections: {', '.join(_SECTIONS)})")
            try:
                data[section][key] = json.loads(value)
            except json.JSONDecodeError:
                raise IndexFormatError(f"{reprlib.repr(setting)}: the value is not a number or a list") from None
        return LocalConfig.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "LocalConfig":
        """The config a manifest records; missing sections and settings take today's defaults.

        Raises:
            IndexFormatError: not an object, an unknown section or setting, or a value of the wrong type
                or out of range.
        """
        if not isinstance(data, dict):
            raise IndexFormatError("local settings are not a JSON object")
        unknown = [name for name in data if name not in _SECTIONS]
        if unknown:
            raise IndexFormatError(f"local settings: unknown section(s) {unknown_names(unknown)} "
                                   "(made by another pinid?)")
        return cls(**{name: kind.from_dict(data[name], f"local settings: {name}")
                      for name, kind in _SECTIONS.items() if name in data})


_SECTIONS: dict[str, type[Config]] = {"features": FeatureConfig, "vote": VoteConfig, "verify": VerifyConfig,
                                      "candidates": CandidateConfig}


@dataclass(frozen=True)
class Candidate:
    """One verified reference image, with everything the models and a report need."""

    image_id: int
    pin_row: int
    design: str
    clip_score: float
    votes: float
    verification: Verification
    rank_score: float
    # how like the photo's pin this image looks as a whole (``GlanceIndex.similarities``; on a board, the pin
    # where it aligned); 0: no glance (no pin stood out, or a board candidate that did not align)
    glance: float = 0.0

    @property
    def aligned(self) -> bool:
        return self.verification.aligned


class Recogniser:
    """Verification and calibration over one index's local store and pin table (made by ``PinIndex``)."""

    def __init__(self, store: LocalStore, vocabulary: Any, table: PinTable, calibration: Calibration,
                 config: LocalConfig = LocalConfig()) -> None:
        self.store = store
        self.vocabulary = vocabulary
        self.config = config
        self.table = table
        self.image_pin_rows = dict(zip(table.image_ids.tolist(), table.image_pin_rows.tolist()))
        self.designs = {pin_row: pin.design for pin_row, pin in table.pins.items()}
        self.calibration = calibration
        self.design_images: dict[str, list[int]] = {}
        for image_id, pin_row in self.image_pin_rows.items():
            self.design_images.setdefault(self.designs[pin_row], []).append(image_id)
        self._glance_index: GlanceIndex | None = None

    @property
    def config(self) -> LocalConfig:
        return self._config

    @config.setter
    def config(self, config: LocalConfig) -> None:
        """A new config reaches the vocabulary too: its probe count is a search setting (``VoteConfig``)."""
        self._config = config
        if hasattr(self.vocabulary, "probes"):
            self.vocabulary.probes = config.vote.inverted_lists_probed

    def candidates(self, image: Image.Image, clip: Sequence[tuple[int, float]] = (), *,
                   limit: int | None = None, board: bool = False, exclude: Collection[int] = ()
                   ) -> tuple[list[Candidate], float]:
        """Verified candidates for a photo, best first, and the factor back to the photo's pixels.

        ``clip`` lists (image id, cosine) from the CLIP search, best first;
        ``limit`` defaults to the config's candidate count for single pins or boards;
        reference images in ``exclude`` are never candidates (as if not in the
        index: how self-calibration leaves pins out without rebuilding).
        """
        import cv2

        config = self.config
        if limit is None:
            limit = config.candidates.max_board_candidates if board else config.candidates.max_tries
        excluded = frozenset(int(i) for i in exclude)
        clip = [(int(image_id), float(cosine)) for image_id, cosine in clip if int(image_id) not in excluded]
        work, back = working_copy(image, config.features.board_long_side_px if board
                                  else config.features.query_long_side_px)
        features, mirror = query_feature_pair(work, board=board, config=config.features,
                                              inverted=config.verify.match_inverted > 0)
        votes, voted, mirrored = self._screen(features, mirror, excluded)
        clip_scores = dict(clip)
        # what to verify: (image, mirrored) pairs; an image no vote brought is tried in the likelier orientation
        tries: list[tuple[int, bool]] = []
        # the whole pin's glance: how like the photo each reference looks (evidence for the ranking), and its
        # best finds as candidates, at most a fifth of the list: the vote and CLIP are the stronger sources
        salient = None if board else salient_region(np.asarray(work))  # the photo's pin, for glance and outline
        similar = None if salient is None else self._glances().similarities(np.asarray(work), salient)
        glance = self._glance(similar, min(config.candidates.glance_candidates, limit // 5), excluded)
        # the glance cannot tell a mirrored photo (colours and outline are the same): its first finds are tried
        # both ways round, so that neither orientation is favoured
        both_ways = config.candidates.glance_mirrored_candidates if mirror is not None else 0
        glance_tries = [pair for i, image_id in enumerate(glance)
                        for pair in ((image_id, mirrored), (image_id, not mirrored))[:2 if i < both_ways else 1]]
        ahead = max(0, limit - len(glance))
        for pair in _interleave([(image_id, mirrored) for image_id, _ in clip], voted):
            if len(tries) == ahead:  # the glance's own finds go in before the rest of the vote
                _extend(tries, glance_tries, limit + len(glance_tries) - len(glance))
            if len(tries) >= limit:
                break
            if pair not in tries and pair[0] in self.store:
                tries.append(pair)
        _extend(tries, glance_tries, limit + len(glance_tries) - len(glance))
        lab = cv2.cvtColor(np.asarray(work), cv2.COLOR_RGB2LAB)
        # the cascade's last step: when one of the first tries aligns beyond doubt, the rest cannot change the answer.
        # The glance's tries go in with the first: they find the plain pins that the vote's sure alignments miss
        first = tries[:config.candidates.first_tries] if config.candidates.sure_inliers and not board else tries
        if config.candidates.glance_tries_first and len(first) < len(tries):
            first = first + [pair for pair in tries[len(first):] if pair in glance_tries]
        checked = self._verify(first, features, mirror, lab)
        if len(first) < len(tries) and not any(v.aligned and v.distinct_inliers >= config.candidates.sure_inliers
                                               for v in checked):
            verified = dict(zip(first, checked))
            rest = [pair for pair in tries if pair not in verified]
            verified.update(zip(rest, self._verify(rest, features, mirror, lab)))
            checked = [verified[pair] for pair in tries]  # in the order of the tries, as if verified at once
        checked = _strongest_each(checked)
        if similar is not None and salient is not None and config.candidates.outline_candidates:
            checked = self._with_outlines(checked, similar, photo_silhouette(np.asarray(work), salient), lab,
                                          excluded)
        order = [v.image_id for v in checked]
        checked, shared = self._with_colourways(checked, lab, excluded, single_pin=not board)
        order += [v.image_id for v in checked[len(order):]]
        # colourways that share one alignment share its vote too: the vote counts grey-level shapes, which
        # a recolouring changes by chance, so only colour (and the glance) tells them apart
        votes = {**votes, **{sibling: max(votes.get(sibling, 0.0), votes.get(source, 0.0))
                             for sibling, source in shared.items()}}
        glance_of: dict[int, float] = {}
        if board:
            glance_of = self._glance_where_aligned(np.asarray(work), checked)
        elif similar is not None:
            rows = self._glances().rows
            glance_of = {v.image_id: float(similar[rows[v.image_id]]) for v in checked if v.image_id in rows}
        found = [Candidate(v.image_id, self.image_pin_rows[v.image_id], self.designs[self.image_pin_rows[v.image_id]],
                           clip_scores.get(v.image_id, float("nan")), votes.get(v.image_id, 0.0), v, 0.0,
                           glance_of.get(v.image_id, 0.0))
                 for v in checked]
        scores = self.calibration.rank_score(candidate_features(found))
        result = [replace(candidate, rank_score=float(score)) for candidate, score in zip(found, scores)]
        position = {image_id: i for i, image_id in enumerate(order)}
        result.sort(key=lambda c: (-c.rank_score, position[c.image_id]))
        return result, back

    def prepare(self) -> None:
        """Make now what the first single-pin answer would otherwise make: every reference image's glance
        (about 0.5 ms an image, from the stored thumbnails). A server calls it before taking requests."""
        self._glances()

    def _glances(self) -> GlanceIndex:
        if self._glance_index is None:
            ids, histograms, shapes, outlines = [], [], [], []
            for image_ids, colour, geometry in self.store.thumbnails():
                found = reference_descriptors(colour, geometry)
                ids.append(image_ids)
                histograms.append(found[0])
                shapes.append(found[1])
                outlines.append(found[2])
            self._glance_index = GlanceIndex(np.concatenate(ids) if ids else np.zeros(0, np.int64),
                                             np.concatenate(histograms) if ids else np.zeros((0, HISTOGRAM_DIMS)),
                                             np.concatenate(shapes) if ids else np.zeros((0, SHAPE_DIMS)),
                                             np.concatenate(outlines) if ids else None)
        return self._glance_index

    def _glance(self, similar: np.ndarray | None, count: int, excluded: frozenset[int]) -> list[int]:
        """The ``count`` reference images (not excluded) that look most like the photo's salient region as a
        whole (``similar``: ``GlanceIndex.similarities``, None when no pin stood out)."""
        if similar is None or count <= 0:
            return []
        found = self._glances().best(similar, count + len(excluded))
        return [image_id for image_id in found if image_id not in excluded][:count]

    def _glance_where_aligned(self, rgb: np.ndarray, checked: list[Verification]) -> dict[int, float]:
        """On a board, each aligned candidate's glance: how like it the pin where it aligned looks.

        A board photo as a whole is no one pin, so the photo is cut to the
        aligned outline's box and a quarter of its size around it, and that cut
        is glanced at as a single-pin photo is (the same spreads over the
        catalogue, so the ranking's weight means the same). A chance alignment
        lands on another pin or on the board's cloth, which looks nothing like it.
        """
        glances = self._glances()
        height, width = rgb.shape[:2]
        found: dict[int, float] = {}
        made: dict[tuple[int, int, int, int], np.ndarray | None] = {}
        for v in checked:
            if not v.aligned or v.polygon is None or v.image_id not in glances.rows:
                continue
            (x0, y0), (x1, y1) = v.polygon.min(axis=0), v.polygon.max(axis=0)
            margin = 0.25 * max(x1 - x0, y1 - y0)
            box = (int(max(0.0, x0 - margin)), int(max(0.0, y0 - margin)),
                   int(min(width, x1 + margin + 1)), int(min(height, y1 + margin + 1)))
            if box[2] - box[0] < _MIN_GLANCE_SIDE or box[3] - box[1] < _MIN_GLANCE_SIDE:
                continue
            if box not in made:  # colourway siblings share their source's outline
                made[box] = glances.similarities(np.ascontiguousarray(rgb[box[1]:box[3], box[0]:box[2]]))
            similar = made[box]
            if similar is not None:
                found[v.image_id] = float(similar[glances.rows[v.image_id]])
        return found

    def _screen(self, features: Features, mirror: Features | None, excluded: frozenset[int]
                ) -> tuple[dict[int, float], list[tuple[int, bool]], bool]:
        """Each voted image's votes (the larger of its two); (image, mirrored) pairs in the order to verify
        them; and whether the photo is clearly mirrored (how to try candidates no vote brought).

        The photo and its mirror image vote separately (a mirrored photo of an
        asymmetric pin gets only chance votes as taken), and both ballots are
        treated alike: the first ``screened_candidates`` images of each get the
        cascade's cheap check (``quick_inliers``: does one similarity transform
        explain the vote's own matches?), and one list holds both: images the
        cheap check found (at least ``screen_min_inliers``) first, by its
        inliers, then the rest by their votes. An image both ballots name is
        listed once for each, so it is tried in both orientations where both
        rank high enough. A mirrored photo's two ballots are the unmirrored
        photo's swapped, so it gets the same tries, each the other way round:
        no orientation is favoured.
        """
        config = self.config.candidates
        floor = config.screen_min_inliers
        listed: list[tuple[int, float, int, bool]] = []  # (cheap-check inliers if found, votes, image, mirrored)
        strongest = {False: 0, True: 0}

        def vote(seen: Features) -> Ballot:
            return ballot(self.vocabulary, self.store.row_image, seen.descriptors, seen.keypoints,
                          self.store.vote_keypoints, config=self.config.vote)

        # the mirror image votes on a worker thread while the photo's own ballot is screened
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pinid-vote") as pool:
            mirror_vote = None if mirror is None else pool.submit(vote, mirror)
            for flip, seen in ((False, features), (True, mirror)):
                if seen is None:
                    continue
                found = vote(seen) if not flip or mirror_vote is None else mirror_vote.result()
                matches_of = _matches_by_image(found)
                screened = 0
                for image_id, total in zip(found.images.tolist(), found.totals.tolist()):
                    if image_id in excluded:
                        continue
                    quick = 0
                    if screened < config.screened_candidates and image_id in self.store:
                        screened += 1
                        query_rows, reference_rows = matches_of(image_id)
                        keypoints, first_row, long_side = self.store.keypoints(image_id)
                        quick = quick_inliers(seen.keypoints[query_rows], keypoints[reference_rows - first_row],
                                              long_side, config=self.config.verify)
                        strongest[flip] = max(strongest[flip], quick)
                    listed.append((quick if quick >= floor else 0, total, image_id, flip))
        listed.sort(key=lambda item: (-item[0], -item[1], item[2], item[3]))
        votes: dict[int, float] = {}
        for _, total, image_id, _ in listed:
            votes[image_id] = max(votes.get(image_id, 0.0), total)
        # mirrored only on clear evidence: chance matches give one or two inliers either way
        mirrored = strongest[True] >= max(floor, strongest[False] + 1)
        return votes, [(image_id, flip) for _, _, image_id, flip in listed], mirrored

    def _verify(self, tries: list[tuple[int, bool]], features: Features, mirror: Features | None,
                lab: np.ndarray) -> list[Verification]:
        """Verify each (image, mirrored) pair, in order; results map reference to photo pixels."""
        if mirror is None:
            tries = [(image_id, False) for image_id, _ in tries]
        found: dict[tuple[int, bool], Verification] = {}
        as_taken = [image_id for image_id, flip in tries if not flip]
        for v in verify(features, lab, [(i, self.store.entry(i)) for i in as_taken], config=self.config.verify):
            found[v.image_id, False] = v
        flipped = [image_id for image_id, flip in tries if flip]
        if flipped:
            flip = np.array([[-1.0, 0.0, lab.shape[1] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            for v in verify(mirror, np.ascontiguousarray(lab[:, ::-1]), [(i, self.store.entry(i)) for i in flipped],
                            config=self.config.verify):
                if v.aligned:
                    polygon = (v.polygon * [-1.0, 1.0] + [lab.shape[1] - 1.0, 0.0]).astype(np.float32)
                    v = replace(v, homography=flip @ v.homography, polygon=polygon)
                found[v.image_id, True] = v
        return [found[pair] for pair in tries]

    def _with_outlines(self, checked: list[Verification], similar: np.ndarray, photo: Silhouette | None,
                       lab: np.ndarray, excluded: frozenset[int]) -> list[Verification]:
        """``checked`` with outline alignments (to ``photo``, the silhouette of the photo's pin) for the
        glance's first finds that keypoints left unaligned (replacing their failed verifications; those
        never tried come last)."""
        aligned = {v.image_id for v in checked if v.aligned}
        wanted = [image_id for image_id in self._glance(similar, self.config.candidates.outline_candidates, excluded)
                  if image_id not in aligned and image_id in self.store]
        if photo is None or not wanted:
            return checked
        by_image = {v.image_id: v for v in checked}
        pyramid = LabPyramid(lab)
        photo_area = float(lab.shape[0] * lab.shape[1])
        extra = []
        for image_id in wanted:
            found = outline_alignment(image_id, self.store.entry(image_id), photo, pyramid, photo_area,
                                      config=self.config.verify)
            if found is None:
                continue
            if image_id in by_image:
                by_image[image_id] = found
            else:
                extra.append(found)
        return [by_image[v.image_id] for v in checked] + extra

    def _with_colourways(self, checked: list[Verification], lab: np.ndarray, excluded: frozenset[int] = frozenset(),
                         *, single_pin: bool = False) -> tuple[list[Verification], dict[int, int]]:
        """Give the colourways of an aligned design one alignment, each with its own colour distance; and
        which image each sibling's alignment came from.

        Colourways of a design share their shape, but a recoloured pin can show
        different grey-level contrast and fail geometric verification on its
        own, or miss the candidate list. On the benchmark, every colourway
        query whose design was found but whose variant was not had its true
        variant unaligned. The design's strongest alignment (most distinct
        inliers) is carried over (through the two pin boxes, in case the shots
        are framed differently) and only the colour comparison decides.

        In a single-pin photo every sibling takes it, even one that aligned on
        its own: siblings' own alignments differ only by chance (a few
        inliers more or less, a slightly different map), and letting that
        decide chose the wrong colourway of the right design twice as often
        for mirrored photos as for the same photos as taken (13 against 6 of
        300). On a board two colourways may lie side by side, so there a
        sibling keeps its own alignment.
        """
        by_image = {v.image_id: v for v in checked}
        aligned = sorted((v for v in checked if v.aligned),
                         key=lambda v: (-v.distinct_inliers, -np.nan_to_num(v.structure, nan=-1.0)))
        pyramid = LabPyramid(lab)
        extra: list[Verification] = []
        shared: dict[int, int] = {}
        designs: set[str] = set()
        config = self.config.candidates
        sources = config.max_colourway_sources if single_pin else config.max_board_colourway_sources
        for source in aligned:
            if len(designs) == sources:
                break
            design = self.designs[self.image_pin_rows[source.image_id]]
            if design in designs:
                continue
            designs.add(design)
            source_box = self.store.entry(source.image_id).pin_box
            for sibling in self.design_images.get(design, ()):
                if sibling in excluded or sibling == source.image_id:
                    continue
                current = by_image.get(sibling)
                if current is not None and current.aligned and not single_pin:
                    continue
                entry = self.store.entry(sibling)
                homography = source.homography @ _box_to_box(entry.pin_box, source_box)
                distance, structure = dense_checks(entry, pyramid, homography, config=self.config.verify)
                # the polygon stays the source's: the map takes the sibling's pin box onto the source's
                by_image[sibling] = replace(source, image_id=sibling, homography=homography,
                                            colour_distance=distance, structure=structure)
                shared[sibling] = source.image_id
                if current is None:
                    extra.append(by_image[sibling])
        return [by_image[v.image_id] for v in checked] + extra, shared

    def identify(self, image: Image.Image, clip: Sequence[tuple[int, float]] = (), *, k: int = 5,
                 limit: int | None = None, query: str = "<image>") -> Identification:
        """The answer for one decoded photo: the top ``k`` pins and one calibrated confidence."""
        ranked, back = self.candidates(image, clip, limit=limit)
        confidence = self.confidence(ranked)
        return Identification(query, self.matches(ranked, k, back), None, confidence,
                              confidence < self.calibration.unknown_below)

    def matches(self, ranked: Sequence[Candidate], k: int, back: float = 1.0) -> list[Match]:
        """Ranked candidates as pins (each pin once, at its best image), polygons in photo pixels."""
        matches: list[Match] = []
        seen: set[int] = set()
        for candidate in ranked:
            if candidate.pin_row in seen:
                continue
            seen.add(candidate.pin_row)
            pin = self.table.pins[candidate.pin_row]
            check = candidate.verification
            polygon = None if check.polygon is None else np.round(check.polygon * back, 1).tolist()
            similarity = None if np.isnan(candidate.clip_score) else candidate.clip_score
            matches.append(Match(len(matches) + 1, pin.pin_id, pin.name, pin.metadata,
                                 self.table.image_paths[candidate.image_id], similarity,
                                 sigmoid(candidate.rank_score), check.distinct_inliers,
                                 check.colour_distance if check.aligned else None, polygon))
            if len(matches) == k:
                break
        return matches

    def confidence(self, ranked: Sequence[Candidate]) -> float:
        """How sure the first candidate is: its score and its lead over the best rival of another pin.

        The evidence is whatever the ranking used: geometry and colour when the
        best candidate aligned, CLIP's margin and the vote when it did not.
        """
        if not ranked:
            return 0.0
        top, lead, _ = self.calibration.best_and_lead([c.rank_score for c in ranked], [c.pin_row for c in ranked], 0)
        return self.calibration.answer_confidence(top, lead)

    def find_all(self, image: Image.Image, *, limit: int | None = None, min_confidence: float | None = None
                 ) -> list[Found]:
        """Every pin verified in a board photo, with its confidence and polygon in photo pixels, most confident first.

        Two sources are pooled. Board-wide: the whole photo's candidates, best
        first; one whose outline mostly overlaps a pin already found is the same
        pin (or a colourway sibling) and is dropped, and the confidence of each
        uses as rivals only candidates that overlap it. Pin by pin: each region
        that stands out from the board's backdrop is cut out and identified as a
        single-pin photo (``board_regions``), with everything a single pin gets
        (the glance, outline alignment, more tries). Where the two name different
        pins at one place, each is right only if the other is wrong: its
        confidence is multiplied by one minus the other's. Then the most
        confident find at each place wins; those under ``min_confidence`` (default:
        the calibrated threshold) are left out, so the finds at a threshold are
        those at 0 that reach it.
        """
        threshold = self.calibration.unknown_below if min_confidence is None else min_confidence
        ranked, back = self.candidates(image, limit=limit, board=True)
        same_pin = self.config.candidates.same_pin_overlap_above
        aligned = [c for c in ranked if c.aligned]
        board_wide: list[Found] = []
        for candidate in aligned:
            polygon = candidate.verification.polygon * back
            if any(_overlap(polygon, other.polygon) > same_pin for other in board_wide):
                continue
            rivals = [c for c in aligned if c is not candidate
                      and _overlap(polygon, c.verification.polygon * back) > same_pin]
            confidence = self.confidence([candidate, *rivals])
            if confidence > 0:
                board_wide.append(Found(self.matches([candidate], 1, back)[0], confidence, polygon))
        by_region = self._found_by_region(image, [f.polygon for f in sorted(board_wide, key=lambda f: -f.confidence)])
        found = _weighed_against(board_wide, by_region, same_pin) + _weighed_against(by_region, board_wide, same_pin)
        pooled: list[Found] = []
        for one in sorted(found, key=lambda f: -f.confidence):
            if one.confidence >= threshold and one.confidence > 0 and \
                    not any(_overlap(one.polygon, other.polygon) > same_pin for other in pooled):
                pooled.append(one)
        return pooled

    def _found_by_region(self, image: Image.Image, board_wide: Sequence[np.ndarray] = ()) -> list[Found]:
        """The pin each region of a board photo that stands out from its backdrop shows, identified as a
        single-pin photo (where its best candidate aligned), in photo pixels; also the pin at each of the first
        ``board_found_cuts`` of ``board_wide`` (outlines found board-wide, most confident first) that no such
        region covers.

        A board's photo as a whole gives each pin a share of its keypoints and
        no glance or outline of its own; cut out, a pin is a single-pin photo.
        """
        config = self.config.candidates
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        boxes = pin_regions(rgb, config.board_regions) if config.board_regions else []
        uncovered = [(*polygon.min(axis=0), *polygon.max(axis=0)) for polygon in board_wide]
        uncovered = [box for box in uncovered if max((_box_iou(box, region) for region in boxes), default=0.0) < 0.5]
        boxes = [*boxes, *uncovered[:config.board_found_cuts]]
        found = []
        for x0, y0, x1, y1 in boxes:
            margin = config.board_region_margin * max(x1 - x0, y1 - y0)
            box = (int(max(0, x0 - margin)), int(max(0, y0 - margin)), int(min(width, x1 + margin)),
                   int(min(height, y1 + margin)))
            if box[2] - box[0] < _MIN_GLANCE_SIDE or box[3] - box[1] < _MIN_GLANCE_SIDE:
                continue  # an outline found board-wide may lie mostly outside the photo
            ranked, back = self.candidates(Image.fromarray(np.ascontiguousarray(rgb[box[1]:box[3], box[0]:box[2]])))
            if not ranked or not ranked[0].aligned:
                continue
            polygon = ranked[0].verification.polygon * back + np.float32([box[0], box[1]])
            match = replace(self.matches(ranked, 1, back)[0], polygon=np.round(polygon, 1).tolist())
            found.append(Found(match, self.confidence(ranked), polygon))
        return found


def _box_iou(first: Sequence[float], second: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    union = ((first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
             - width * height)
    return float(width * height / union) if union > 0 else 0.0


def _weighed_against(found: list[Found], others: list[Found], same_pin: float) -> list[Found]:
    """Each find with its confidence times one minus that of the most confident of ``others`` that names
    another pin at the same place (overlap above ``same_pin``): both cannot be right.

    On the 300 full-benchmark boards (lead over another design) this moved the
    best recall at precision 0.95 of the pooled finds from 0.347 to 0.398:
    where the board-wide pass and the pin cut out disagree, one of them is
    wrong, and the most confident wrong finds were such places.
    """
    weighed = []
    for one in found:
        rival = max((other.confidence for other in others if other.match.pin_id != one.match.pin_id
                     and _overlap(one.polygon, other.polygon) > same_pin), default=0.0)
        weighed.append(replace(one, confidence=one.confidence * (1.0 - rival)) if rival else one)
    return weighed


def _extend(order: list[T], more: Sequence[T], limit: int) -> list[T]:
    """Append to ``order`` those of ``more`` it lacks, up to ``limit`` in all; return what was appended."""
    added = [item for item in more if item not in order][:max(0, limit - len(order))]
    order += added
    return added


def _strongest_each(verifications: list[Verification]) -> list[Verification]:
    """Each image once, where it first appears, with its strongest verification (aligned, then more distinct
    inliers): an image may have been tried in both orientations."""
    best: dict[int, Verification] = {}
    for v in verifications:
        other = best.get(v.image_id)
        if other is None or (v.aligned, v.distinct_inliers) > (other.aligned, other.distinct_inliers):
            best[v.image_id] = v
    return list(best.values())


def _matches_by_image(found: Ballot) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """The ballot's matches of one image: (query rows, global reference rows), none for an image without.

    Grouped once, sliced on demand: a ballot names thousands of images, of which only the screened few are asked.
    """
    order = np.argsort(found.match_images, kind="stable")
    images, starts = np.unique(found.match_images[order], return_index=True)
    spans = dict(zip(images.tolist(), zip(starts.tolist(), np.r_[starts[1:], len(order)].tolist())))
    nothing = (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def matches_of(image_id: int) -> tuple[np.ndarray, np.ndarray]:
        if image_id not in spans:
            return nothing
        start, end = spans[image_id]
        return found.query_rows[order[start:end]], found.reference_rows[order[start:end]]

    return matches_of


def _box_to_box(source: tuple[float, float, float, float], target: tuple[float, float, float, float]) -> np.ndarray:
    """The scale-and-shift map taking one pin box onto another (3 x 3)."""
    sx = (target[2] - target[0]) / max(source[2] - source[0], 1e-6)
    sy = (target[3] - target[1]) / max(source[3] - source[1], 1e-6)
    return np.array([[sx, 0.0, target[0] - sx * source[0]], [0.0, sy, target[1] - sy * source[1]], [0.0, 0.0, 1.0]])


def _interleave(first: Sequence[T], second: Sequence[T]) -> Iterator[T]:
    """One of each in turn, then the rest of the longer; lazily, since a vote names thousands of images and
    the tries take the first few dozen."""
    for i in range(max(len(first), len(second))):
        if i < len(first):
            yield first[i]
        if i < len(second):
            yield second[i]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller area of two convex polygons."""
    import cv2

    area, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    smaller = min(cv2.contourArea(a.astype(np.float32)), cv2.contourArea(b.astype(np.float32)))
    return float(area / smaller) if smaller > 0 else 0.0
