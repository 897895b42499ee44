"""Score `pinid dedup --encoder local` (no model) on a benchmark's listings: pairwise precision and recall.

The benchmark folder (scripts/make_benchmark.py) has ``listings.csv`` with
``listing_id,image,pin_id,photo_group,kind``. ``photo`` mode is scored against
``photo_group``, ``pin`` mode against ``pin_id``. Besides the grouping, the
pin-mode stages are counted over pairs of listings that show the same pin in
different photos: how many the candidates (photo hashes and the local-feature
vote) proposed, and how many of the proposed ones the verifier confirmed; and
over proposed pairs of different pins: how many it wrongly confirmed.

    python scripts/eval_dedup_local.py /tmp/bs3
    python scripts/eval_dedup_local.py /tmp/bs3 --cache /tmp/bs3-cache --json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinid.dedup import DedupOptions, read_listings  # noqa: E402
from pinid.dedup.local_pairs import (LocalDedupConfig, ListingFeatures, PairVerifier, PhotoHashOnly,  # noqa: E402
                                     dedup_local, open_feature_cache, vote_pairs)
from pinid.dedup.metrics import pairwise_scores  # noqa: E402
from pinid.encoder.cache import EmbeddingCache, EmbedOptions, embed_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="benchmark folder with listings.csv")
    parser.add_argument("--cache", type=Path, default=None, help="dedup cache [default: a temporary folder]")
    parser.add_argument("--workers", type=int, default=2, help="threads for feature extraction")
    parser.add_argument("--min-distinct-inliers", type=int, default=None, help="override the verifier's threshold")
    parser.add_argument("--max-hue-difference", type=float, default=None, help="override (degrees)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()

    config = LocalDedupConfig()
    if args.min_distinct_inliers is not None:
        config = replace(config, min_distinct_inliers=args.min_distinct_inliers)
    if args.max_hue_difference is not None:
        config = replace(config, max_hue_difference_deg=args.max_hue_difference)
    manifest = args.bench / "listings.csv"
    with open(manifest, newline="", encoding="utf-8") as handle:
        truth = {row["listing_id"]: row for row in csv.DictReader(handle)}
    listings = read_listings(manifest)
    embed_options = EmbedOptions(workers=args.workers)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.cache or Path(scratch) / "cache"
        cache = EmbeddingCache.open(folder, PhotoHashOnly().identity())
        with open_feature_cache(folder, config) as feature_cache:
            for mode, column in (("photo", "photo_group"), ("pin", "pin_id")):
                started = time.perf_counter()
                report = dedup_local(listings, cache, feature_cache, DedupOptions(mode=mode), config,  # type: ignore[arg-type]
                                     embed_options)
                scores = pairwise_scores({row.listing_id: row.group_id for row in report.rows if row.group_id},
                                         {key: row[column] for key, row in truth.items()})
                results.append({"setting": f"{mode}, --encoder local", "truth": column, **scores, **report.stats,
                                "encoded": report.encoded, "seconds": time.perf_counter() - started})
            stages = pin_stages(listings, truth, cache, feature_cache, config, embed_options)
    if args.json:
        print(json.dumps({"listings": len(listings), "config": config.to_dict(), "results": results,
                          "stages": stages}, indent=2))
        return
    print(f"dedup --encoder local on {manifest}: {len(listings)} listings\n")
    print("| setting | truth | true pairs | predicted pairs | precision | recall | F1 | purity | groups | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['setting']} | {r['truth']} | {int(r['true_pairs'])} | {int(r['predicted_pairs'])} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['purity']:.3f} | {r['groups']} "
              f"| {r['seconds']:.1f} |")
    s = stages
    print(f"\npin-mode stages, pairs of different photos of one pin ({s['same_pin_pairs']}): proposed "
          f"{s['same_pin_proposed']} ({s['candidate_recall']:.3f}), confirmed {s['same_pin_confirmed']} "
          f"({s['confirmed_recall']:.3f}); proposed pairs of different pins: {s['other_proposed']}, "
          f"confirmed {s['other_confirmed']} (of them same design, another colourway: {s['colourway_confirmed']})")


def pin_stages(listings: list, truth: dict, cache: EmbeddingCache, feature_cache, config: LocalDedupConfig,
               embed_options: EmbedOptions) -> dict:
    """Candidate recall and verifier outcomes over pairs of content rows (the cached features are reused)."""
    from pinid.dedup.graph import hash_pairs

    embedded = embed_files([listing.image for listing in listings], PhotoHashOnly(), cache, embed_options)
    first: dict[int, int] = {}
    for position, row in enumerate(embedded.content_of.tolist()):
        if row >= 0:
            first.setdefault(row, position)
    info = [truth[listings[first[row]].listing_id] for row in range(len(embedded.digests))]
    paths = [listings[first[row]].image for row in range(len(embedded.digests))]
    features = ListingFeatures(feature_cache, embedded.digests, config)
    features.extract_missing(paths, embed_options.workers)
    proposed = set(zip(*[part.tolist() for part in vote_pairs(features, config)]))
    proposed |= set(zip(*[part.tolist() for part in hash_pairs(embedded.hashes)]))
    verifier = PairVerifier(features, {}, paths, config)
    count = len(info)
    same = [(a, b) for a in range(count) for b in range(a + 1, count)
            if info[a]["pin_id"] == info[b]["pin_id"] and info[a]["photo_group"] != info[b]["photo_group"]]
    same_proposed = [pair for pair in same if pair in proposed]
    confirmed = sum(verifier.same_pin(a, b) for a, b in same_proposed)
    others = [(a, b) for a, b in proposed if info[a]["pin_id"] != info[b]["pin_id"]]
    wrong = [(a, b) for a, b in others if verifier.same_pin(a, b)]
    design = [(a, b) for a, b in wrong if info[a]["pin_id"].split("-cw")[0] == info[b]["pin_id"].split("-cw")[0]]
    return {"same_pin_pairs": len(same), "same_pin_proposed": len(same_proposed),
            "candidate_recall": len(same_proposed) / max(1, len(same)), "same_pin_confirmed": confirmed,
            "confirmed_recall": confirmed / max(1, len(same)), "other_proposed": len(others),
            "other_confirmed": len(wrong), "colourway_confirmed": len(design)}


if __name__ == "__main__":
    main()
