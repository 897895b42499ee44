"""Where does the weight-free path lose a photo? Stage by stage, on a sample of known queries.

Usage::

    python scripts/probe_stages.py INDEX_DIR QUERIES_CSV [--sample 200] [--seed 0] [--mirror]

For each sampled photo of a catalogue pin (``single`` and ``colourway``), with
the index's own settings and no CLIP (local features only):

* **candidates**: the true pin is among the reference images verified (the first
  ``max_tries`` of the merged candidate list);
* **aligned**: its reference image passed geometric verification;
* **first**: it is the answer (rank 1 after the calibrated ranking).

Also the time per photo (p50 / p90). ``--mirror`` scores left-right mirrored
copies of the same photos instead (front cameras and some listing sites mirror
photos). Prints one Markdown table; a research probe, smoke-tested at its
smallest size (tests/test_scripts.py).
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
    parser.add_argument("--mirror", action="store_true", help="score mirrored copies of the photos")
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
    counts = {"candidates": 0, "aligned": 0, "first": 0}
    seconds: list[float] = []
    for query in queries:
        photo = load_image(query.image)
        if args.mirror:
            photo = ImageOps.mirror(photo)
        truth = table.image_ids_of([query.pin_id or ""])
        started = time.perf_counter()
        ranked, _ = recogniser.candidates(photo, limit=limit)
        seconds.append(time.perf_counter() - started)
        mine = [c for c in ranked if c.image_id in truth]
        counts["candidates"] += bool(mine)
        counts["aligned"] += any(c.aligned for c in mine)
        counts["first"] += bool(ranked) and ranked[0].image_id in truth
    total = max(1, len(queries))
    print(f"| {len(queries)} photos{' (mirrored)' if args.mirror else ''} | share |")
    print("| --- | --- |")
    for name, count in counts.items():
        print(f"| {name} | {count / total:.3f} |")
    if seconds:
        print(f"| time p50 / p90 (ms) | {np.percentile(seconds, 50) * 1000:.0f} / "
              f"{np.percentile(seconds, 90) * 1000:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
