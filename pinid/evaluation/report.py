"""Markdown tables of evaluation metrics, for people: the headline numbers of ``pinid eval``.

Pure formatting of the metric dicts that ``run.evaluate`` and
``boards.evaluate_boards`` return; a missing number (NaN or None) prints "n/a".
"""

from __future__ import annotations

import math
from typing import Any


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """A short Markdown table of the headline numbers of query scoring."""
    retrieval, colourway, open_set = metrics["retrieval"], metrics["colourway"], metrics["open_set"]
    queries = metrics["queries"]
    lines = ["| metric | value |", "| --- | --- |",
             f"| queries (known / unknown / unreadable) | {queries['known']} / {queries['unknown']} / "
             f"{queries['unreadable']} |"]
    index = metrics.get("index", {})
    if index.get("verified") and index.get("candidates"):
        lines.append(f"| tries verified per photo | {index['candidates']} |")
    lines += [f"| {name} | {_fmt(retrieval[name])} |" for name in ("recall@1", "recall@5", "recall@10", "mrr")]
    for split, values in retrieval["by_split"].items():
        lines.append(f"| recall@1, {split} ({values['queries']}) | {_fmt(values['recall@1'])} |")
    lines.append(f"| colourway: right variant at rank 1 ({colourway['queries']}) | "
                 f"{_fmt(colourway['variant_accuracy'])} |")
    lines.append(f"| colourway: right design at rank 1 | {_fmt(colourway['design_accuracy'])} |")
    lines.append(f"| open set: AUROC known vs unknown | {_fmt(open_set['auroc_known_vs_unknown'])} |")
    at = open_set["at_threshold"]
    if at:
        source = open_set.get("threshold_from")
        lines.append(f"| open set at threshold {at['threshold']:.3f}{f' ({source})' if source else ''}: "
                     f"precision / recall | {_fmt(at['precision'])} / {_fmt(at['recall'])} |")
    else:
        lines.append("| open set at threshold | n/a (CLIP-only scores are cosines, not calibrated: "
                     "no threshold unless --threshold gives one) |")
    latency = metrics.get("latency_ms", {})
    if latency.get("samples"):
        for stage in [name for name in ("load_encode", "search", "total") if name in latency]:
            lines.append(f"| latency {stage.replace('_', '+')} p50 / p90 / p95 (ms, {latency['samples']} queries) | "
                         f"{latency[stage]['p50']:.1f} / {latency[stage].get('p90', float('nan')):.1f} / "
                         f"{latency[stage]['p95']:.1f} |")
    return "\n".join(lines)


def boards_markdown(metrics: dict[str, Any]) -> str:
    """A short Markdown table of multi-pin (board) scoring, after a blank line."""
    at = metrics["at_threshold"]
    key = next(k for k in metrics if k.startswith("recall_at_precision_"))
    return "\n".join([
        "", "| boards | value |", "| --- | --- |",
        f"| board photos / pins on them | {metrics['boards']} / {metrics['pins']} |",
        f"| at confidence {at['threshold']:.2f}: precision / recall | {_fmt(at['precision'])} / "
        f"{_fmt(at['recall'])} |",
        f"| best recall with precision >= {key.rsplit('_', 1)[1]} | {_fmt(metrics[key])} |"])
