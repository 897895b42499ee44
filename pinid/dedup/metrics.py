"""Scoring a grouping against ground truth: pairwise precision/recall/F1 and purity.

Pairwise scores ask the question a marketplace cares about: of the pairs we
put together, how many belong together (precision), and of the pairs that
belong together, how many did we find (recall)? Purity says how much of each
predicted group is its majority true group. Counted from the contingency
table, so no list of pairs is ever built (fine at a million listings).
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Mapping, Sequence


def _pairs(count: int) -> int:
    return count * (count - 1) // 2


def pairwise_scores(predicted: Mapping[str, Hashable], truth: Mapping[str, Hashable]) -> dict[str, float]:
    """Precision, recall, F1 over same-group pairs, and purity, for items in ``truth``.

    ``predicted`` maps item -> predicted group; an item missing from it (e.g.
    unreadable) counts as a group of its own. With no true pairs recall is 1.0;
    with no predicted pairs precision is 1.0 (nothing claimed, nothing wrong).
    """
    items = list(truth)
    predicted_of = {item: predicted.get(item, ("__alone__", item)) for item in items}
    cells = Counter((predicted_of[item], truth[item]) for item in items)
    predicted_sizes = Counter(predicted_of.values())
    true_sizes = Counter(truth[item] for item in items)
    together = sum(_pairs(n) for n in cells.values())
    claimed = sum(_pairs(n) for n in predicted_sizes.values())
    actual = sum(_pairs(n) for n in true_sizes.values())
    precision = together / claimed if claimed else 1.0
    recall = together / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    majority: dict[Hashable, int] = {}
    for (group, _), n in cells.items():
        majority[group] = max(majority.get(group, 0), n)
    purity = sum(majority.values()) / len(items) if items else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "purity": purity,
            "true_pairs": float(actual), "predicted_pairs": float(claimed), "correct_pairs": float(together)}


def groups_from_labels(ids: Sequence[str], labels: Sequence[Hashable]) -> dict[str, Hashable]:
    """``{id: label}``, the shape :func:`pairwise_scores` takes."""
    return dict(zip(ids, labels))
