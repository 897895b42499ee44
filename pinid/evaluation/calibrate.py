"""Fit an index's calibration on your own labelled photos (``pinid calibrate INDEX --photos LABELLED.csv``).

The shipped calibration was fitted on the synthetic benchmark with a
local-features-only index; photos from your own camera, lighting and
catalogue (and a CLIP index, whose cosine it gives weight 0) can score
differently. Labelled photos (``image,pin_id``; an empty pin id is a pin not
in the catalogue) are identified with the index, both models are refitted
(:func:`pinid.identify.confidence.fit_calibration`) and the result is written
into the index's manifest atomically, with its provenance and self-test figures.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ImageError, InputError
from ..identify.confidence import Calibration, LabelledPhoto, candidate_features, fit_calibration
from ..index import PinIndex
from ..results import Progress
from ..tables import TableError, printable, read_rows
from .metrics import auroc


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
