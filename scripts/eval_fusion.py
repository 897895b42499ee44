"""Measure evidence fusion: CLIP only, local features only, and both, each with two calibrations.

Usage:
    python scripts/eval_fusion.py INDEX BENCH_DIR [--sample 1000 --seed 0] [--fit-queries 600 --fit-seed 1]
        [--simulate 300 --simulate-seed 0] [--json FILE]

INDEX must be a CLIP index (built with an informative encoder: with random
weights CLIP only adds noise) of BENCH_DIR's catalogue. Three modes are scored
on one seeded sample of BENCH_DIR/queries.csv (the sample ``pinid eval
--sample N --seed S`` scores):

* **CLIP only**: ranking by cosine (``identify --no-verify``); AUROC of the top cosine;
* **local only**: the same index loaded without its encoder (``encoder=None``), so
  candidates come from the local-feature vote alone;
* **fused**: the index as ``pinid identify`` uses it.

The two verified modes are scored under two calibrations, each fitted for that mode:
**self** (what ``pinid calibrate INDEX`` fits: simulated photos of the catalogue's own
reference images, leave-pins-out) and **benchmark** (``--fit-queries`` benchmark photos
outside the evaluation sample, as ``scripts/fit_calibration.py`` draws them). Each
photo is verified once per mode; calibrations only re-rank and re-score its candidates.
Prints a Markdown table: recall@1 over known pins, right colourway at rank 1, and
AUROC of known against unknown pins.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pinid.evaluation.calibrate import identify_simulated, labelled_candidates
from pinid.evaluation.metrics import auroc
from pinid.evaluation.queries import GroundTruthQuery, read_queries, sample_queries
from pinid.evaluation.simulate import PhotoSimulator, Unreadable, catalogue_pins
from pinid.identify.confidence import Calibration, LabelledPhoto, candidate_features, fit_calibration
from pinid.index import PinIndex


def verified(index: PinIndex, queries: Sequence[GroundTruthQuery], label: str) -> list[LabelledPhoto]:
    """Every query's verified candidates, labelled by its pin."""
    start = time.perf_counter()

    def progress(_: str, number: int, total: int) -> None:
        if number % 100 == 0 or number == total:
            print(f"  {label}: {number}/{total} photos, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)

    return labelled_candidates(index, queries, on_progress=progress)


def simulated(index: PinIndex, count: int, seed: int, label: str) -> list[LabelledPhoto]:
    """What self-calibration fits on: simulated photos of the catalogue, some of pins left out."""
    start = time.perf_counter()
    samples = [outcome[1] for outcome in identify_simulated(index, PhotoSimulator(catalogue_pins(index), seed), count)
               if not isinstance(outcome, Unreadable)]
    print(f"  {label}: {len(samples)} simulated photos, {time.perf_counter() - start:.0f} s",
          file=sys.stderr, flush=True)
    return samples


def score(index: PinIndex, calibration: Calibration, samples: Sequence[LabelledPhoto],
          queries: Sequence[GroundTruthQuery]) -> dict[str, float]:
    """Recall@1, colourway accuracy and AUROC of verified answers re-ranked under ``calibration``."""
    right: list[bool] = []
    colourway: list[bool] = []
    known_conf: list[float] = []
    unknown_conf: list[float] = []
    for sample, query in zip(samples, queries):
        confidence, top_pin = 0.0, None
        if sample.candidates:
            scores = calibration.rank_score(candidate_features(sample.candidates))
            top, lead, best = calibration.best_and_lead(scores, [c.pin_row for c in sample.candidates])
            confidence, top_pin = calibration.answer_confidence(top, lead), index.pin_of(sample.candidates[best])
        (known_conf if query.is_known else unknown_conf).append(confidence)
        if query.is_known:
            right.append(top_pin == query.pin_id)
            if query.split == "colourway":
                colourway.append(top_pin == query.pin_id)
    return figures(right, colourway, known_conf, unknown_conf)


def clip_only(index: PinIndex, queries: Sequence[GroundTruthQuery]) -> dict[str, float]:
    answers = index.identify_many([q.image for q in queries], k=1, verify=False)
    right, colourway, known_conf, unknown_conf = [], [], [], []
    for answer, query in zip(answers, queries):
        top = answer.matches[0] if answer.matches else None
        (known_conf if query.is_known else unknown_conf).append(top.similarity if top else -1.0)
        if query.is_known:
            right.append(top is not None and top.pin_id == query.pin_id)
            if query.split == "colourway":
                colourway.append(right[-1])
    return figures(right, colourway, known_conf, unknown_conf)


def figures(right: list[bool], colourway: list[bool], known: list[float], unknown: list[float]) -> dict[str, float]:
    area = auroc(known, unknown)
    return {"recall_at_1": float(np.mean(right)) if right else math.nan,
            "colourway_at_1": float(np.mean(colourway)) if colourway else math.nan,
            "auroc": area, "known": len(known), "unknown": len(unknown), "colourway_photos": len(colourway)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("index", type=Path)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--sample", type=int, default=1000, help="evaluation photos (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-queries", type=int, default=600, help="benchmark photos for the benchmark fit")
    parser.add_argument("--fit-seed", type=int, default=1)
    parser.add_argument("--simulate", type=int, default=300, help="simulated photos for the self-calibration")
    parser.add_argument("--simulate-seed", type=int, default=0)
    parser.add_argument("--modes", default="clip,local,fused",
                        help="which of clip, local, fused to score (run them in separate processes to use more cores)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()

    fused = PinIndex.load(args.index)
    if not fused.has_vectors:
        sys.exit("eval_fusion: error: the index has local features only; build it with a CLIP encoder")
    local = PinIndex.load(args.index, encoder=None)
    every = read_queries(args.bench / "queries.csv")
    queries = sample_queries(every, args.sample, seed=args.seed)
    held = {q.query_id for q in queries}
    fitting = sample_queries([q for q in every if q.query_id not in held], args.fit_queries, seed=args.fit_seed)

    modes = set(args.modes.split(","))
    if not modes or modes - {"clip", "local", "fused"}:
        sys.exit(f"eval_fusion: error: --modes takes clip, local and fused, not {args.modes!r}")
    rows: dict[str, dict[str, Any]] = {"CLIP only (cosine)": clip_only(fused, queries)} if "clip" in modes else {}
    weights: dict[str, dict[str, float]] = {}
    for mode, index in (("local only", local), ("fused", fused)):
        if mode.split()[0] not in modes:
            continue
        self_cal = fit_calibration(simulated(index, args.simulate, args.simulate_seed, f"{mode}, self"),
                                   fitted_on="simulated")
        bench_cal = fit_calibration(verified(index, fitting, f"{mode}, benchmark fit"), fitted_on="benchmark")
        samples = verified(index, queries, f"{mode}, evaluation")
        for name, calibration in (("self-calibrated", self_cal), ("benchmark-fitted", bench_cal)):
            rows[f"{mode}, {name}"] = score(index, calibration, samples, queries)
            weights[f"{mode}, {name}"] = calibration.weights()

    print(f"\n{len(queries)} photos of {args.bench.name} (sample seed {args.seed}); encoder "
          f"{fused.manifest.encoder['model'] if fused.manifest.encoder else '?'}\n")
    print("| mode, calibration | recall@1 | right colourway at 1 | AUROC known vs unknown |")
    print("| --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['recall_at_1']:.3f} | {row['colourway_at_1']:.3f} | {row['auroc']:.3f} |")
    counts = next(iter(rows.values()))
    print(f"\nknown {counts['known']}, unknown {counts['unknown']}, colourway {counts['colourway_photos']}")
    print("\nranking weights (per feature):")
    for name, values in weights.items():
        print(f"  {name}: " + ", ".join(f"{k} {v:+.2f}" for k, v in values.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "weights": weights, "args": {k: str(v) for k, v in
                                                                                  vars(args).items()}}, indent=1))


if __name__ == "__main__":
    from pinid.errors import PinidError

    try:
        main()
    except PinidError as exc:
        sys.exit(f"eval_fusion: error: {exc}")
