"""Which way of fitting the ranking answers best? Each is fitted on the same photos and scored on the eval sample.

Usage::

    python scripts/compare_rankings.py INDEX BENCH_DIR [--queries 900] [--seed 1] [--holdout 1000]
        [--holdout-seed 0]

INDEX must be built from BENCH_DIR's catalogue. The fitting photos are drawn
as ``scripts/fit_calibration.py`` draws them (outside the evaluation sample);
the scored photos are the evaluation sample itself, as ``pinid eval --sample
HOLDOUT --seed HOLDOUT_SEED`` draws it. Each photo's verified candidates are
gathered once: they do not depend on the calibration, so each row gives what
``pinid eval`` would for that sample (latency and boards aside), without
identifying the photos again. Rows: the index's own calibration; each
candidate scored on its own (pointwise logistic regression) or photo by photo
(``fit_ranking``, pinid's fit); with the first-order features only or with
their second-order terms too. Prints one Markdown table; smoke-tested at its
smallest size (tests/test_scripts.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pinid.errors import PinidError
from pinid.evaluation.calibrate import labelled_candidates, self_test
from pinid.evaluation.queries import GroundTruthQuery, read_queries, sample_queries
from pinid.identify.confidence import (RANKING_FEATURES, Calibration, LabelledPhoto, fit_calibration, fit_logistic,
                                      fit_ranking)
from pinid.index import PinIndex

Photos = Sequence[tuple[np.ndarray, np.ndarray]]
FIRST_ORDER = sum("*" not in name for name in RANKING_FEATURES)


def pointwise(photos: Photos) -> np.ndarray:
    return fit_logistic(np.concatenate([x for x, _ in photos]), np.concatenate([t for _, t in photos]))


def first_order_only(fit: Callable[[Photos], np.ndarray]) -> Callable[[Photos], np.ndarray]:
    """``fit`` on the first-order features, the second-order terms weighted 0."""
    def fitted(photos: Photos) -> np.ndarray:
        weights = fit([(x[:, :FIRST_ORDER], t) for x, t in photos])
        return np.concatenate([weights, np.zeros(len(RANKING_FEATURES) - FIRST_ORDER)])
    return fitted


FITS: dict[str, Callable[[Photos], np.ndarray]] = {
    "pointwise, first order": first_order_only(pointwise),
    "pointwise, with second order": pointwise,
    "photo by photo, first order": first_order_only(fit_ranking),
    "photo by photo, with second order (pinid's fit)": fit_ranking,
}


def progress(stage: str, done: int, total: int) -> None:
    if done % 50 == 0 or done == total:
        print(f"{stage}: {done}/{total} photos", file=sys.stderr, flush=True)


def row(index: PinIndex, name: str, calibration: Calibration, scored: list[LabelledPhoto],
        queries: list[GroundTruthQuery]) -> str:
    known = [q.is_known for q in queries]
    overall = self_test(index, calibration, scored, known)
    cells = []
    for split in ("single", "colourway"):
        chosen = [i for i, q in enumerate(queries) if q.split == split]
        figures = self_test(index, calibration, [scored[i] for i in chosen], [known[i] for i in chosen])
        cells.append(_shown(figures["recall_at_1"]))
    return f"| {name} | {cells[0]} | {cells[1]} | {_shown(overall['auroc'])} |"


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--queries", type=int, default=900, help="fitting photos")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--holdout", type=int, default=1000, help="size of the evaluation sample, which is scored")
    parser.add_argument("--holdout-seed", type=int, default=0)
    args = parser.parse_args()

    index = PinIndex.load(args.index)
    every = read_queries(args.bench / "queries.csv")
    held_out = sample_queries(every, args.holdout, seed=args.holdout_seed)
    ids = {q.query_id for q in held_out}
    fitting = sample_queries([q for q in every if q.query_id not in ids], args.queries, seed=args.seed)
    fit_samples = labelled_candidates(index, fitting, stage="fitting", on_progress=progress)
    scored = labelled_candidates(index, held_out, stage="scored", on_progress=progress)
    print(f"| ranking fitted ({len(fitting)} photos, seed {args.seed}; scored on the eval sample "
          f"{len(held_out)}/seed {args.holdout_seed}) | recall@1, single | right colourway at 1 | AUROC |")
    print("| --- | --- | --- | --- |")
    print(row(index, "the index's own calibration", index.calibration, scored, held_out))
    for name, fit in FITS.items():
        try:
            calibration = fit_calibration(fit_samples, fitted_on=name, ranking_fit=fit)
        except PinidError as exc:  # too few photos to fit this way: say so in the row
            print(f"| {name} | n/a ({exc}) | | |")
            continue
        print(row(index, name, calibration, scored, held_out))


if __name__ == "__main__":
    try:
        main()
    except PinidError as exc:
        sys.exit(f"compare_rankings: error: {exc}")
