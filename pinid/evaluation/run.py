"""Scoring an index against ground truth, the way users meet pinid.

Every change to pinid is judged by these numbers: retrieval (recall@k, MRR),
colourways (the right variant of a design), open set (does a pin that is not
in the catalogue look unknown?) and latency per stage. Ground truth is read by
``queries``, the numbers computed by ``metrics`` and printed by ``report``.

The open-set threshold is explicit. A verified run scores each answer by its
calibrated confidence, so by default it is judged at the index's calibrated
threshold (``index.calibration.unknown_below``, the one ``identify`` uses to say
"unknown pin"). A CLIP-only run (``verify=False``) scores answers by cosine
similarity, which no calibration maps to a probability: it has an open-set
threshold only when one is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..index import PinIndex
from ..results import Progress
from ..tables import dumps
from .metrics import RECALL_AT, compute_metrics
from .queries import GroundTruthQuery, QueryOutcome
from .report import metrics_markdown

#: ``metrics["open_set"]["threshold_from"]``: where the open-set threshold came from.
THRESHOLD_GIVEN = "given"
THRESHOLD_CALIBRATION = "index calibration"


@dataclass
class EvaluationReport:
    """Metrics (plain JSON-able dict) plus every outcome, for failure sheets."""

    metrics: dict[str, Any]
    outcomes: list[QueryOutcome] = field(repr=False, default_factory=list)

    def to_json(self) -> str:
        """The metrics as JSON; NaN (a metric with no queries behind it) becomes null."""
        return dumps(self.metrics, indent=2)

    def to_markdown(self) -> str:
        return metrics_markdown(self.metrics)


def evaluate(index: PinIndex, queries: Sequence[GroundTruthQuery], *, depth: int = 10, batch_size: int = 32,
             threshold: float | None = None, latency_samples: int = 50, verify: bool = True,
             candidates: int | None = None, on_progress: Progress | None = None) -> EvaluationReport:
    """Rank every query against ``index`` and compute metrics and per-stage latency.

    Latency is measured separately on the first ``latency_samples`` queries
    one at a time, as a user calling identify sees it. ``threshold`` (the
    open-set threshold) defaults to the index's calibrated threshold for
    verified runs; CLIP-only runs (``verify=False``) have none unless it is
    given, since their scores are cosines, not calibrated probabilities.
    ``metrics["open_set"]["threshold_from"]`` records which it was. ``candidates`` (tries verified per
    photo, as ``identify --candidates`` sets it; default the index's setting) is the trade of recall for
    time, so the latency is measured with it too.
    """
    threshold_from = THRESHOLD_GIVEN if threshold is not None else None
    if threshold is None and verify:
        threshold, threshold_from = index.calibration.unknown_below, THRESHOLD_CALIBRATION
    results = index.identify_many([q.image for q in queries], k=max(depth, max(RECALL_AT)), batch_size=batch_size,
                                  verify=verify, candidates=candidates, on_progress=on_progress)
    outcomes = [QueryOutcome(query, result.matches, result.error, result.confidence)
                for query, result in zip(queries, results)]
    metrics = compute_metrics(outcomes, threshold)
    metrics["open_set"]["threshold_from"] = threshold_from
    metrics["latency_ms"] = measure_latency(index, [q.image for q in queries[:latency_samples]], verify=verify,
                                            candidates=candidates)
    recorded = index.manifest.encoder or {"model": "local features only", "pretrained": None}
    metrics["index"] = {"path": str(index.path), "pins": index.manifest.pins,
                        "images": index.manifest.images, "encoder": recorded["model"],
                        "pretrained": recorded.get("pretrained"), "verified": verify,
                        "candidates": index.recogniser.config.candidates.max_tries if candidates is None else candidates}
    return EvaluationReport(metrics, outcomes)


def measure_latency(index: PinIndex, images: Sequence[Path], *, verify: bool = True,
                    candidates: int | None = None) -> dict[str, Any]:
    """p50/p90/p95 for single queries: verified identification end to end, or CLIP load+encode/search."""
    if not images:
        return {"samples": 0}
    if verify:
        totals = []
        for image in images:
            started = time.perf_counter()
            index.identify_many([image], k=10, candidates=candidates)
            totals.append((time.perf_counter() - started) * 1e3)
        return {"samples": len(images), "total": _percentiles(totals)}
    encoder = index.encoder
    if encoder is None:
        return {"samples": 0}
    stages: dict[str, list[float]] = {"load_encode": [], "search": [], "total": []}
    for image in images:
        started = time.perf_counter()
        encoded = encoder.encode_images([image], batch_size=1, workers=1)
        encoded_at = time.perf_counter()
        if len(encoded.ok):
            index.search(encoded.vectors, k=10)
        searched_at = time.perf_counter()
        stages["load_encode"].append(encoded_at - started)
        stages["search"].append(searched_at - encoded_at)
        stages["total"].append(searched_at - started)
    summary: dict[str, Any] = {"samples": len(images)}
    for stage, seconds in stages.items():
        values = np.array(seconds) * 1e3
        summary[stage] = _percentiles(values)
    return summary


def _percentiles(milliseconds: Sequence[float]) -> dict[str, float]:
    """The tail matters as much as the middle: a service is judged by its slow answers."""
    return {f"p{q}": float(np.percentile(milliseconds, q)) for q in (50, 90, 95)}
