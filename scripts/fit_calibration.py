"""Fit the ranking and confidence models on labelled photos and write calibration.json.

Usage:
    python scripts/fit_calibration.py INDEX BENCH_DIR [--queries 600] [--seed 1]
        [--holdout 1000 --holdout-seed 0] [-o pinid/calibration.json] [--apply]

INDEX must be built from BENCH_DIR's catalogue. Queries are a seeded random
sample of BENCH_DIR/queries.csv (known and unknown alike), drawn from the
queries *outside* the held-out evaluation sample (``pinid eval --sample
HOLDOUT --seed HOLDOUT_SEED``), so that evaluation never sees a fitted photo.
CLIP's weights (cosine and margin) can only be learned from an index whose
encoder is informative; with a local-only index they stay 0. An index's own
calibration (``pinid calibrate``) is fitted the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pinid.evaluation.calibrate import labelled_candidates
from pinid.evaluation.queries import read_queries, sample_queries
from pinid.identify.confidence import fit_calibration
from pinid.index import PinIndex


def progress(_: str, done: int, total: int) -> None:
    if done % 50 == 0:
        print(f"{done}/{total} photos", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--holdout", type=int, default=1000, help="size of the evaluation sample to leave out")
    parser.add_argument("--holdout-seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=Path("pinid/calibration.json"))
    parser.add_argument("--apply", action="store_true", help="also make INDEX answer with the new calibration")
    args = parser.parse_args()

    index = PinIndex.load(args.index)
    every = read_queries(args.bench / "queries.csv")
    held_out = {q.query_id for q in sample_queries(every, args.holdout, seed=args.holdout_seed)}
    queries = sample_queries([q for q in every if q.query_id not in held_out], args.queries, seed=args.seed)
    samples = labelled_candidates(index, queries, on_progress=progress)
    truth = [t for sample in samples for t in sample.truth]
    fitted_on = (f"{len(queries)} photos (seed {args.seed}, outside eval sample {args.holdout}/seed "
                 f"{args.holdout_seed}) of {args.bench.name}, index {args.index.name} "
                 f"({index.manifest.encoder['model'] if index.manifest.encoder else 'local features only'}); "
                 f"{sum(truth)} true of {len(truth)} candidates")
    calibration = fit_calibration(samples, fitted_on=fitted_on)
    args.output.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n", encoding="utf-8")
    if args.apply:
        index.replace_calibration(calibration)
    print(json.dumps(calibration.to_dict(), indent=2))


if __name__ == "__main__":
    from pinid.errors import PinidError

    try:
        main()
    except PinidError as exc:  # too few photos to fit, unreadable index: one line, like the CLI
        sys.exit(f"fit_calibration: error: {exc}")
