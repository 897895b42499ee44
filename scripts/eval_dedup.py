"""Score `pinid dedup` on a benchmark's listings: pairwise precision, recall, F1 and purity.

The benchmark folder (scripts/make_benchmark.py) has ``listings.csv`` with
``listing_id,image,pin_id,photo_group,kind``; re-uploads of one photo share
``photo_group``. ``photo`` mode is scored against ``photo_group``, ``pin``
mode against ``pin_id``. Listings are embedded once (into ``--cache``) and
grouped under each setting.

    python scripts/eval_dedup.py /tmp/bs1 --model local-dir:clip-b32
    python scripts/eval_dedup.py /tmp/bs1 --tiny-random     # plumbing check only: random weights
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinid.dedup import DedupOptions, find_groups, group_stats, read_listings  # noqa: E402
from pinid.encoder.cache import embed_files  # noqa: E402
from pinid.dedup.metrics import pairwise_scores  # noqa: E402
from pinid.encoder.cache import EmbeddingCache  # noqa: E402
from pinid.encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED, Encoder, EncoderSpec, save_local_dir  # noqa: E402

#: The same tiny architecture the tests use (tests/conftest.py), with random weights.
TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 128, "width": 32, "heads": 2, "layers": 1},
}

SETTINGS = [  # (label, mode, threshold, ground-truth column)
    ("photo, photo hash only (threshold 1)", "photo", 1.0, "photo_group"),
    ("photo, default (hash or cosine >= 0.97)", "photo", None, "photo_group"),
    ("pin, photo hash only (threshold 1)", "pin", 1.0, "pin_id"),
    ("pin, default (cosine >= 0.90)", "pin", None, "pin_id"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="benchmark folder with listings.csv")
    parser.add_argument("--model", default=None)
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--tiny-random", action="store_true", help="use a tiny random-weight model (no download)")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache [default: a temporary folder]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    manifest = args.bench / "listings.csv"
    with open(manifest, newline="", encoding="utf-8") as handle:
        truth = {row["listing_id"]: row for row in csv.DictReader(handle)}
    listings = read_listings(manifest)
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny_random:
            folder = save_local_dir(Path(scratch) / "tiny", model_cfg=TINY_MODEL_CFG, random_weights=True)
            encoder = Encoder.load(f"local-dir:{folder}", device="cpu", offline=True)
        else:
            spec = EncoderSpec(args.model or DEFAULT_MODEL,
                               args.pretrained if args.pretrained is not None or args.model else DEFAULT_PRETRAINED)
            encoder = Encoder.load(spec)
        cache = EmbeddingCache.open(args.cache or Path(scratch) / "cache", encoder.identity())
        started = time.perf_counter()
        embedded = embed_files([listing.image for listing in listings], encoder, cache)
        embed_seconds = time.perf_counter() - started
        results = []
        for label, mode, threshold, column in SETTINGS:
            started = time.perf_counter()
            options = DedupOptions(mode=mode, min_cosine=threshold)  # type: ignore[arg-type]
            rows = find_groups(listings, embedded, options)
            seconds = time.perf_counter() - started
            scores = pairwise_scores({row.listing_id: row.group_id for row in rows if row.group_id},
                                     {key: row[column] for key, row in truth.items()})
            results.append({"setting": label, "truth": column, **scores, **group_stats(rows), "seconds": seconds})
    model = "tiny RANDOM weights" if args.tiny_random else encoder.spec.describe()
    if args.json:
        print(json.dumps({"model": model, "listings": len(listings), "embed_seconds": embed_seconds,
                          "results": results}, indent=2))
        return
    print(f"dedup on {manifest}: {len(listings)} listings, model {model}, "
          f"embedded in {embed_seconds:.1f} s ({embedded.encoded} encoded, {embedded.cached} from cache)\n")
    print("| setting | truth | true pairs | predicted pairs | precision | recall | F1 | purity | groups |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['setting']} | {r['truth']} | {int(r['true_pairs'])} | {int(r['predicted_pairs'])} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['purity']:.3f} | {r['groups']} |")


if __name__ == "__main__":
    main()
