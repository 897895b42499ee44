"""Fit an index's calibration on its own catalogue (``pinid calibrate INDEX``) or on labelled photos.

The shipped calibration was fitted on the synthetic benchmark with a
local-features-only index; photos from your own camera, lighting and
catalogue (and a CLIP index, whose cosine it gives weight 0) can score
differently. Two sources of labelled photos:

* simulated (:func:`calibrate_simulated`, the default and what ``build-index``
  runs): phone photos of the catalogue's own reference images, a share of them
  playing pins that are not in the catalogue (:mod:`pinid.evaluation.simulate`);
  the self-test figures are on held-out simulated photos;
* your own (:func:`calibrate`, ``--photos LABELLED.csv``): ``image,pin_id``, an
  empty pin id being a pin not in the catalogue.

The photos are identified with the index, both models are refitted
(:func:`pinid.identify.confidence.fit_calibration`) and the result is written
into the index's manifest atomically, with its provenance and self-test figures.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ImageError, InputError
from ..identify.confidence import Calibration, LabelledPhoto, candidate_features, fit_calibration
from ..index import PinIndex
from ..results import Progress
from ..tables import TableError, printable, read_rows
from .metrics import auroc
from .queries import GroundTruthQuery
from .simulate import (SIMULATED_PHOTOS, UNKNOWN_SHARE, PhotoSimulator, SimulatedPhoto, Unreadable, catalogue_pins,
                       in_order)

HELD_OUT_EVERY = 3  # simulated photo i with i % 3 == 2 is held out of the self-test's fit


@dataclass(frozen=True)
class LabelledImage:
    """One row of a labelled-photos table: where it is, the image path, its pin (None: not in the catalogue)."""

    where: str
    image: Path
    pin_id: str | None


@dataclass(frozen=True)
class CalibrationReport:
    """What ``calibrate`` wrote, and which photos it could not read ((where, why) pairs)."""

    calibration: Calibration
    used: int
    skipped: list[tuple[str, str]]


def read_labelled_photos(path: Path, index: PinIndex) -> list[LabelledImage]:
    """The rows of LABELLED.csv/.jsonl (columns image,pin_id; images relative to the file).

    Raises:
        InputError: the table cannot be read, lacks a column, is empty, has a row without an image,
            or names a pin id that is not in ``index`` (the first such one is named).
    """
    path = Path(path)
    try:
        rows = read_rows(path, required=("image", "pin_id"))
    except TableError as exc:
        raise InputError(str(exc)) from None
    if not rows:
        raise InputError(f"{printable(path)} has no labelled photos")
    labelled = []
    for where, row in rows:
        image = "" if row.get("image") is None else str(row["image"]).strip()
        if not image:
            raise InputError(f"{where}: no image")
        pin_id = "" if row.get("pin_id") is None else str(row["pin_id"]).strip()
        if pin_id and not index.reference_images(pin_id):
            raise InputError(f"{where}: pin id {printable(pin_id)} is not in index {printable(index.path)} "
                             "(leave pin_id empty for a pin that is not in the catalogue)")
        labelled.append(LabelledImage(where, path.parent / image, pin_id or None))
    return labelled


def calibrate(index: PinIndex, photos: Path, *, on_progress: Progress | None = None) -> CalibrationReport:
    """Identify every labelled photo, fit both models, write the calibration into the index's manifest.

    Unreadable photos are skipped (and reported). Nothing is written unless the
    fit succeeds: on any error the manifest stays byte for byte as it was.

    Raises:
        InputError: a bad table (see :func:`read_labelled_photos`) or too little to fit on.
    """
    photos = Path(photos)
    labelled = read_labelled_photos(photos, index)
    samples: list[LabelledPhoto] = []
    known: list[bool] = []
    skipped: list[tuple[str, str]] = []
    for done, item in enumerate(labelled, 1):
        try:
            ranked, _ = index.verified_candidates(item.image)
        except ImageError as exc:
            skipped.append((item.where, exc.reason))
        else:
            samples.append(LabelledPhoto(ranked, [index.pin_of(c) == item.pin_id for c in ranked]))
            known.append(item.pin_id is not None)
        if on_progress is not None:
            on_progress("identifying", done, len(labelled))
    if not samples:
        raise InputError(f"none of the {len(labelled)} photos in {printable(photos)} could be read")
    fitted_on = (f"{len(samples)} photos from {printable(photos.name)} ({sum(known)} known, "
                 f"{len(known) - sum(known)} not in the catalogue), "
                 f"{datetime.now(timezone.utc).date().isoformat()}")
    calibration = fit_calibration(samples, fitted_on=fitted_on, unknown_below=index.calibration.unknown_below)
    calibration = replace(calibration, self_test=self_test(index, calibration, samples, known))
    index.replace_calibration(calibration)
    return CalibrationReport(calibration, len(samples), skipped)


def identify_simulated(index: PinIndex, simulator: PhotoSimulator, photos: int, *, workers: int = 2
                       ) -> Iterator[tuple[SimulatedPhoto, LabelledPhoto] | Unreadable]:
    """Simulated photos ``0 .. photos-1``, each identified with its left-out pins excluded, labelled, in order."""
    def identified(number: int) -> tuple[SimulatedPhoto, LabelledPhoto] | Unreadable:
        made = simulator.photo(number)
        if isinstance(made, Unreadable):
            return made
        ranked, _ = index.verified_candidates(made.data, exclude_pins=made.excluded)
        return made, LabelledPhoto(ranked, [made.known and index.pin_of(c) == made.pin_id for c in ranked])

    return in_order(identified, photos, workers=workers)


def calibrate_simulated(index: PinIndex, *, photos: int = SIMULATED_PHOTOS, seed: int = 0,
                        unknown_share: float = UNKNOWN_SHARE, workers: int = 2,
                        on_progress: Progress | None = None) -> CalibrationReport:
    """Fit both models on simulated phone photos of the index's own reference images; write them.

    Photo ``i`` comes from ``default_rng([seed, i])`` alone (same seed, same
    calibration). A share ``unknown_share`` of the photos plays a pin that is
    not in the catalogue: its design's pins are excluded from the candidates
    and every candidate is wrong. The written calibration is fitted on all the
    photos; its self-test figures come from a fit on two thirds of them, scored
    on the other third. Photos whose reference image cannot be read are skipped
    (and reported). Nothing is written unless the fit succeeds. ``workers``
    photos are made and identified at a time, on threads (the result does not
    depend on it).

    Raises:
        InputError: fewer than ``HELD_OUT_EVERY`` photos, a share outside [0, 1), no readable
            reference image, or too little to fit on (too few photos, or a catalogue too easy
            or too small to learn a confidence from).
    """
    if photos < HELD_OUT_EVERY:
        raise InputError(f"simulate at least {HELD_OUT_EVERY} photos (one in {HELD_OUT_EVERY} is held out "
                         f"for the self-test), not {photos}")
    simulator = PhotoSimulator(catalogue_pins(index), seed, unknown_share=unknown_share,
                               features=index.recogniser.config.features)
    samples: list[LabelledPhoto] = []
    known: list[bool] = []
    held_out: list[bool] = []
    skipped: list[tuple[str, str]] = []
    for done, outcome in enumerate(identify_simulated(index, simulator, photos, workers=workers), 1):
        if isinstance(outcome, Unreadable):
            skipped.append((outcome.where, outcome.why))
        else:
            made, sample = outcome
            samples.append(sample)
            known.append(made.known)
            held_out.append(made.number % HELD_OUT_EVERY == HELD_OUT_EVERY - 1)
        if on_progress is not None:
            on_progress("simulated photos", done, photos)
    if not samples:
        where, why = skipped[0]
        raise InputError(f"none of the reference images of index {printable(index.path)} could be read, e.g. "
                         f"{printable(where)}: {why} (they are read where the catalogue was at build time)")
    unknown = len(known) - sum(known)
    fitted_on = (f"{len(samples)} simulated photos of this catalogue (seed {seed}, {unknown} not in the "
                 f"catalogue), {datetime.now(timezone.utc).date().isoformat()}")
    unknown_below = index.calibration.unknown_below
    try:
        calibration = fit_calibration(samples, fitted_on=fitted_on, unknown_below=unknown_below)
    except InputError as exc:
        detail = str(exc).removeprefix("too little to calibrate on: ")
        raise InputError(f"{len(samples)} simulated photos of {len(simulator.pins)} pins are too few to "
                         f"calibrate on ({detail})") from None
    fit = [sample for sample, held in zip(samples, held_out) if not held]
    scored = [(sample, is_known) for sample, is_known, held in zip(samples, known, held_out) if held]
    try:
        partial = fit_calibration(fit, fitted_on="", unknown_below=unknown_below)
    except InputError:  # the whole set was enough to fit on, two thirds of it not: no figures to show
        figures: dict[str, Any] = {"photos": len(scored), "known": sum(k for _, k in scored),
                                   "unknown": sum(not k for _, k in scored), "recall_at_1": None, "auroc": None}
    else:
        figures = self_test(index, partial, [s for s, _ in scored], [k for _, k in scored])
    figures["scored_on"] = f"{len(scored)} held-out simulated photos"
    calibration = replace(calibration, self_test=figures)
    index.replace_calibration(calibration)
    return CalibrationReport(calibration, len(samples), skipped)


def labelled_candidates(index: PinIndex, queries: Sequence[GroundTruthQuery], *, stage: str = "identifying",
                        on_progress: Progress | None = None) -> list[LabelledPhoto]:
    """Each ground-truth photo's verified candidates, labelled by its pin: what a calibration is fitted on
    and scored by (the candidates do not depend on the calibration, so one gathering serves every fit)."""
    samples = []
    for number, query in enumerate(queries, 1):
        ranked, _ = index.verified_candidates(query.image)
        samples.append(LabelledPhoto(ranked, [index.pin_of(c) == query.pin_id for c in ranked]))
        if on_progress is not None:
            on_progress(stage, number, len(queries))
    return samples


def self_test(index: PinIndex, calibration: Calibration, samples: Sequence[LabelledPhoto],
              known: Sequence[bool]) -> dict[str, Any]:
    """Recall@1 (photos of catalogue pins) and AUROC (known vs unknown, by confidence) under ``calibration``.

    The photos' candidates are re-ranked and the confidence computed as the
    index's recogniser would answer with the new calibration, without
    identifying them again. Figures on the fitting photos are optimistic.
    """
    recogniser = copy.copy(index.recogniser)
    recogniser.calibration = calibration
    right: list[bool] = []
    confidences: list[tuple[bool, float]] = []
    for sample, is_known in zip(samples, known):
        scores = calibration.rank_score(candidate_features(sample.candidates)) if sample.candidates else []
        order = sorted(range(len(sample.candidates)), key=lambda i: -float(scores[i]))  # stable: ties keep order
        ranked = [replace(sample.candidates[i], rank_score=float(scores[i])) for i in order]
        confidences.append((is_known, recogniser.confidence(ranked)))
        if is_known:
            right.append(bool(order) and bool(sample.truth[order[0]]))
    positives = [c for k, c in confidences if k]
    negatives = [c for k, c in confidences if not k]
    area = auroc(positives, negatives)
    return {"photos": len(samples), "known": len(positives), "unknown": len(negatives),
            "recall_at_1": float(np.mean(right)) if right else None,
            "auroc": None if math.isnan(area) else area}
