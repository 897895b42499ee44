"""Two sets of local settings compared photo by photo: time, recall@1 and AUROC, and the photos that differ.

Usage::

    python scripts/compare_settings.py INDEX_DIR QUERIES_CSV [--sample 300] [--seed 7] \\
        [--a SECTION.NAME=VALUE ...] [--b SECTION.NAME=VALUE ...]

Each sampled photo (known and unknown alike) is identified under the index's
own settings changed by ``--a`` and under them changed by ``--b``, one right
after the other and in alternating order, so that both see the machine in the
same state: on a noisy machine the ratio of their times means more than either
time. Local features only, no CLIP. Prints one Markdown table and the photos
that one answered rightly and the other not; a research tool, smoke-tested at
its smallest size (tests/test_scripts.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinid.errors import PinidError  # noqa: E402
from pinid.evaluation.metrics import auroc  # noqa: E402
from pinid.evaluation.queries import read_queries, sample_queries  # noqa: E402
from pinid.images import load_image  # noqa: E402
from pinid.index import PinIndex  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("queries", type=Path)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--a", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="a setting of the first run (repeat for more), e.g. candidates.max_tries=90")
    parser.add_argument("--b", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="a setting of the second run")
    args = parser.parse_args(argv)

    try:
        index = PinIndex.load(args.index, encoder=None)
        recogniser = index.recogniser
        configs = {"a": recogniser.config.with_settings(args.a), "b": recogniser.config.with_settings(args.b)}
    except PinidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    queries = sample_queries(read_queries(args.queries), args.sample, args.seed)
    table = recogniser.table
    runs: dict[str, list[tuple[float, str | None, float]]] = {"a": [], "b": []}
    for number, query in enumerate(queries):
        photo = load_image(query.image)
        for name in ("a", "b") if number % 2 == 0 else ("b", "a"):
            recogniser.config = configs[name]
            started = time.perf_counter()
            ranked, _ = recogniser.candidates(photo)
            seconds = time.perf_counter() - started
            answer = table.pins[ranked[0].pin_row].pin_id if ranked else None
            runs[name].append((seconds * 1e3, answer, recogniser.confidence(ranked)))
    known = [i for i, query in enumerate(queries) if query.is_known]
    unknown = [i for i, query in enumerate(queries) if not query.is_known]
    right = {name: {i for i in known if runs[name][i][1] == queries[i].pin_id} for name in runs}
    print(f"{len(queries)} photos ({len(known)} of catalogue pins), seed {args.seed}, in turn\n")
    print("| settings | recall@1 | AUROC known vs unknown | p50 / p90 ms | mean time, b / a |")
    print("| --- | --- | --- | --- | --- |")
    means = {name: float(np.mean([t for t, _, _ in runs[name]])) if queries else float("nan") for name in runs}
    for name, changes in (("a", args.a), ("b", args.b)):
        times = [t for t, _, _ in runs[name]]
        area = auroc([runs[name][i][2] for i in known], [runs[name][i][2] for i in unknown])
        recall = len(right[name]) / len(known) if known else float("nan")
        p50, p90 = np.percentile(times, [50, 90]) if times else (float("nan"),) * 2
        ratio = f"{means['b'] / means['a']:.3f}" if name == "b" else ""
        print(f"| {name}: {' '.join(changes) or 'as the index'} | {recall:.3f} | {area:.3f} | {p50:.0f} / {p90:.0f} "
              f"| {ratio} |")
    print(f"\nright under b only: {len(right['b'] - right['a'])}; right under a only: {len(right['a'] - right['b'])}")
    for name, other in (("a", "b"), ("b", "a")):
        for i in sorted(right[name] - right[other]):
            print(f"  {name} only: {queries[i].query_id} ({queries[i].split}) {other} said {runs[other][i][1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
