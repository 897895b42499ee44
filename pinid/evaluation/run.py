"""Scoring an index against ground truth, the way users meet pinid.

Every change to pinid is judged by these numbers: retrieval (recall@k, MRR),
colourways (the right variant of a design), open set (does a pin that is not
in the catalogue look unknown?) and latency per stage.

Ground truth is a CSV or JSONL file with ``query_id, image, pin_id, design,
split``; ``image`` is relative to the file; ``pin_id`` is empty for pins that
are not in the catalogue (split ``unknown``).
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from ..index import PinIndex
from ..results import Match

UNKNOWN_SPLIT = "unknown"
RECALL_AT = (1, 5, 10)


@dataclass(frozen=True)
class GroundTruthQuery:
    """One query photo and the pin it shows (``pin_id`` None: not in the catalogue)."""

    query_id: str
    image: Path
    pin_id: str | None
    design: str | None
    split: str

    @property
    def is_known(self) -> bool:
        return self.pin_id is not None


@dataclass(frozen=True)
class QueryOutcome:
    query: GroundTruthQuery
    matches: list[Match]
    error: str | None = None
    confidence: float | None = None  # calibrated, when the answer was verified

    @property
    def rank(self) -> int | None:
        """1-based rank of the expected pin among the returned matches, or None."""
        for match in self.matches:
            if match.pin_id == self.query.pin_id:
                return match.rank
        return None

    @property
    def top_score(self) -> float:
        """What open-set decisions use: the calibrated confidence, else the first match's score."""
        if self.confidence is not None:
            return self.confidence
        return self.matches[0].score if self.matches else float("-inf")


@dataclass
class EvaluationReport:
    """Metrics (plain JSON-able dict) plus every outcome, for failure sheets."""

    metrics: dict[str, Any]
    outcomes: list[QueryOutcome] = field(repr=False, default_factory=list)

    def to_json(self) -> str:
        return json.dumps(_finite_or_null(self.metrics), indent=2)

    def to_markdown(self) -> str:
        return metrics_markdown(self.metrics)


def _finite_or_null(value: Any) -> Any:
    """NaN (a metric with no queries behind it) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


# ------------------------------------------------------------------ ground truth
def read_queries(path: str | os.PathLike) -> list[GroundTruthQuery]:
    """Read ground truth (CSV or JSONL); paths are resolved relative to the file."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise InputError(f"ground truth {source} does not exist")
    if source.suffix.lower() == ".csv":
        with open(source, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise InputError(f"ground truth {source}: invalid JSON line ({exc.msg})") from None
    else:
        raise InputError(f"ground truth {source} must be a .csv or .jsonl file")
    queries = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("image"):
            raise InputError(f"ground truth {source} row {number}: needs an 'image'")
        pin_id = (row.get("pin_id") or "").strip() or None
        split = (row.get("split") or "").strip() or ("single" if pin_id else UNKNOWN_SPLIT)
        queries.append(GroundTruthQuery(str(row.get("query_id") or number), source.parent / row["image"], pin_id,
                                        (row.get("design") or "").strip() or None, split))
    if not queries:
        raise InputError(f"ground truth {source} has no queries")
    return queries


# ----------------------------------------------------------------------- metrics
def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Share of queries whose expected pin is in the top ``k`` (None = not found)."""
    if not ranks:
        return float("nan")
    return sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    if not ranks:
        return float("nan")
    return sum(1.0 / rank for rank in ranks if rank) / len(ranks)


def auroc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    positives = np.asarray(positive_scores, dtype=np.float64)
    negatives = np.asarray(negative_scores, dtype=np.float64)
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    values = np.concatenate([positives, negatives])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    # average ranks over ties (1-based), then Mann-Whitney U
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    positive_rank_sum = ranks[: len(positives)].sum()
    u = positive_rank_sum - len(positives) * (len(positives) + 1) / 2.0
    return float(u / (len(positives) * len(negatives)))


def open_set_at_threshold(outcomes: Sequence[QueryOutcome], threshold: float) -> dict[str, float]:
    """Precision and recall when answers scoring below ``threshold`` are reported as 'unknown pin'."""
    accepted = [o for o in outcomes if o.top_score >= threshold]
    correct = [o for o in accepted if o.query.is_known and o.rank == 1]
    known = [o for o in outcomes if o.query.is_known]
    unknown = [o for o in outcomes if not o.query.is_known]
    return {
        "threshold": threshold,
        "precision": len(correct) / len(accepted) if accepted else float("nan"),
        "recall": len(correct) / len(known) if known else float("nan"),
        "unknown_rejected": (sum(1 for o in unknown if o.top_score < threshold) / len(unknown)
                             if unknown else float("nan")),
    }


def compute_metrics(outcomes: Sequence[QueryOutcome], threshold: float | None = None) -> dict[str, Any]:
    """All accuracy metrics from outcomes; pure, so it is tested on hand-made rankings."""
    known = [o for o in outcomes if o.query.is_known]
    unknown = [o for o in outcomes if not o.query.is_known]
    ranks = [o.rank for o in known]
    metrics: dict[str, Any] = {
        "queries": {"total": len(outcomes), "known": len(known), "unknown": len(unknown),
                    "unreadable": sum(1 for o in outcomes if o.error)},
        "retrieval": {f"recall@{k}": recall_at_k(ranks, k) for k in RECALL_AT},
    }
    metrics["retrieval"]["mrr"] = mean_reciprocal_rank(ranks)
    by_split: dict[str, Any] = {}
    for split in sorted({o.query.split for o in known}):
        split_ranks = [o.rank for o in known if o.query.split == split]
        by_split[split] = {"queries": len(split_ranks), "recall@1": recall_at_k(split_ranks, 1),
                           "recall@5": recall_at_k(split_ranks, 5), "mrr": mean_reciprocal_rank(split_ranks)}
    metrics["retrieval"]["by_split"] = by_split
    colourway = [o for o in known if o.query.split == "colourway"]
    metrics["colourway"] = {
        "queries": len(colourway),
        # right variant at rank 1 / some variant of the right design at rank 1
        "variant_accuracy": recall_at_k([o.rank for o in colourway], 1),
        "design_accuracy": (sum(1 for o in colourway if o.matches and
                                o.matches[0].metadata.get("design", o.matches[0].pin_id) == o.query.design)
                            / len(colourway)) if colourway else float("nan"),
    }
    metrics["open_set"] = {
        "auroc_known_vs_unknown": auroc([o.top_score for o in known], [o.top_score for o in unknown]),
        "at_threshold": open_set_at_threshold(outcomes, threshold) if threshold is not None else None,
    }
    return metrics


# -------------------------------------------------------------------- evaluation
def sample_queries(queries: Sequence[GroundTruthQuery], size: int, seed: int = 0) -> list[GroundTruthQuery]:
    """A reproducible random sample that keeps each split's share (verified runs are slow on 12k photos)."""
    if size >= len(queries):
        return list(queries)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(queries))[:size])
    return [queries[i] for i in chosen]


def evaluate(index: PinIndex, queries: Sequence[GroundTruthQuery], *, depth: int = 10, batch_size: int = 32,
             threshold: float | None = None, latency_samples: int = 50, verify: bool = True,
             on_progress: Callable[[int], None] | None = None) -> EvaluationReport:
    """Rank every query against ``index`` and compute metrics and per-stage latency.

    Latency is measured separately on the first ``latency_samples`` queries
    one at a time, as a user calling identify sees it. ``threshold`` defaults
    to the index's calibrated threshold (verified runs) or its operating
    threshold (CLIP-only runs), if it has one.
    """
    if threshold is None:
        threshold = index.calibration.threshold if verify else None
    results = index.identify_many([q.image for q in queries], k=max(depth, max(RECALL_AT)), batch_size=batch_size,
                                  verify=verify, on_progress=on_progress)
    outcomes = [QueryOutcome(query, result.matches, result.error, result.confidence)
                for query, result in zip(queries, results)]
    metrics = compute_metrics(outcomes, threshold)
    metrics["latency_ms"] = measure_latency(index, [q.image for q in queries[:latency_samples]], verify=verify)
    recorded = index.manifest.encoder or {"model": "local features only", "pretrained": None}
    metrics["index"] = {"path": str(index.path), "pins": index.manifest.pins,
                        "images": index.manifest.images, "encoder": recorded["model"],
                        "pretrained": recorded.get("pretrained"), "verified": verify}
    return EvaluationReport(metrics, outcomes)


def measure_latency(index: PinIndex, images: Sequence[Path], *, verify: bool = True) -> dict[str, Any]:
    """p50/p95 for single queries: verified identification end to end, or CLIP load+encode/search."""
    if not images:
        return {"samples": 0}
    if verify:
        totals = []
        for image in images:
            started = time.perf_counter()
            index.identify_many([image], k=10)
            totals.append((time.perf_counter() - started) * 1e3)
        return {"samples": len(images), "total": {"p50": float(np.percentile(totals, 50)),
                                                  "p95": float(np.percentile(totals, 95))}}
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
        summary[stage] = {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}
    return summary


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """A short Markdown table of the headline numbers."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"

    retrieval, colourway, open_set = metrics["retrieval"], metrics["colourway"], metrics["open_set"]
    queries = metrics["queries"]
    lines = ["| metric | value |", "| --- | --- |",
             f"| queries (known / unknown / unreadable) | {queries['known']} / {queries['unknown']} / "
             f"{queries['unreadable']} |"]
    lines += [f"| {name} | {fmt(retrieval[name])} |" for name in ("recall@1", "recall@5", "recall@10", "mrr")]
    for split, values in retrieval["by_split"].items():
        lines.append(f"| recall@1, {split} ({values['queries']}) | {fmt(values['recall@1'])} |")
    lines.append(f"| colourway: right variant at rank 1 ({colourway['queries']}) | "
                 f"{fmt(colourway['variant_accuracy'])} |")
    lines.append(f"| colourway: right design at rank 1 | {fmt(colourway['design_accuracy'])} |")
    lines.append(f"| open set: AUROC known vs unknown | {fmt(open_set['auroc_known_vs_unknown'])} |")
    at = open_set["at_threshold"]
    if at:
        lines.append(f"| open set at threshold {at['threshold']:.3f}: precision / recall | "
                     f"{fmt(at['precision'])} / {fmt(at['recall'])} |")
    else:
        lines.append("| open set at threshold | n/a (index has no operating threshold; pass --threshold) |")
    latency = metrics.get("latency_ms", {})
    if latency.get("samples"):
        for stage in [name for name in ("load_encode", "search", "total") if name in latency]:
            lines.append(f"| latency {stage.replace('_', '+')} p50 / p95 (ms, {latency['samples']} queries) | "
                         f"{latency[stage]['p50']:.1f} / {latency[stage]['p95']:.1f} |")
    return "\n".join(lines)
