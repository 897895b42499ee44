"""Where does the weight-free path lose a photo? Stage by stage, on a sample of known queries.

Usage::

    python scripts/probe_stages.py INDEX_DIR QUERIES_CSV [--sample 200] [--seed 0] [--mirror | --both]

For each sampled photo of a catalogue pin (``single`` and ``colourway``), with
the index's own settings and no CLIP (local features only):

* **candidates**: the true pin is among the reference images verified (the first
  ``max_tries`` of the merged candidate list);
* **aligned**: its reference image passed geometric verification;
* **first**: it is the answer (rank 1 after the calibrated ranking).

Also the time per photo (p50 / p90). ``--mirror`` scores left-right mirrored
copies of the same photos instead (front cameras and some listing sites mirror
photos); ``--both`` scores each photo both ways, one right after the other, and
counts the photos that only one orientation puts first (the mirror target is a
gap, and paired photos measure a gap with less noise). Prints one Markdown
table; a research probe, smoke-tested at its smallest size
(tests/test_scripts.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinid.evaluation.queries import read_queries, sample_queries  # noqa: E402
from pinid.images import load_image  # noqa: E402
from pinid.index import PinIndex  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("queries", type=Path)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--mirror", action="store_true", help="score mirrored copies of the photos")
    how.add_argument("--both", action="store_true", help="score each photo as taken and mirrored, paired")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="override one local setting for this run, e.g. candidates.screened_candidates=0")
    args = parser.parse_args(argv)

    index = PinIndex.load(args.index, encoder=None)
    recogniser = index.recogniser
    if args.set:
        recogniser.config = recogniser.config.with_settings(args.set)
    limit = recogniser.config.candidates.max_tries
    known = [q for q in read_queries(args.queries) if q.is_known]
    queries = sample_queries(known, args.sample, args.seed)
    table = recogniser.table
    ways = ["as taken", "mirrored"] if args.both else ["mirrored"] if args.mirror else ["as taken"]
    counts = {way: {"candidates": 0, "aligned": 0, "first": 0} for way in ways}
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    first_only = {way: 0 for way in ways}
    for number, query in enumerate(queries):
        photo = load_image(query.image)
        truth = table.image_ids_of([query.pin_id or ""])
        first = {}
        for way in (ways if number % 2 == 0 else ways[::-1]):  # in turn, so that neither is always timed first
            started = time.perf_counter()
            ranked, _ = recogniser.candidates(ImageOps.mirror(photo) if way == "mirrored" else photo, limit=limit)
            seconds[way].append(time.perf_counter() - started)
            mine = [c for c in ranked if c.image_id in truth]
            counts[way]["candidates"] += bool(mine)
            counts[way]["aligned"] += any(c.aligned for c in mine)
            first[way] = bool(ranked) and ranked[0].image_id in truth
            counts[way]["first"] += first[way]
        for way in ways:
            first_only[way] += first[way] and not all(first.values())
    total = max(1, len(queries))
    header = [f"{len(queries)} photos{' (mirrored)' if args.mirror else ''}", *(ways if args.both else ["share"])]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for stage in ("candidates", "aligned", "first"):
        print(f"| {stage} | " + " | ".join(f"{counts[way][stage] / total:.3f}" for way in ways) + " |")
    if args.both:
        print("| first, this way only (photos) | " + " | ".join(str(first_only[way]) for way in ways) + " |")
    if queries:
        print("| time p50 / p90 (ms) | " + " | ".join(
            f"{np.percentile(seconds[way], 50) * 1000:.0f} / {np.percentile(seconds[way], 90) * 1000:.0f}"
            for way in ways) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
