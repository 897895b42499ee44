"""Accuracy metrics from query outcomes: pure functions, tested on hand-made rankings.

Retrieval (recall@k, MRR, per split), colourways (the right variant of a
design), and open set (does a pin that is not in the catalogue look unknown?
AUROC, and precision/recall at one threshold).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .queries import QueryOutcome

RECALL_AT = (1, 5, 10)


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Share of queries whose expected pin is in the top ``k`` (None = not found)."""
    if not ranks:
        return float("nan")
    return sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    """Mean of 1/rank (0 for not found): rewards the right pin near the top, not only at rank 1."""
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
    """All accuracy metrics from outcomes (a plain JSON-able dict); ``threshold`` None: no open-set row."""
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
