"""Score `pinid dedup` on a benchmark's listings: pairwise precision, recall, F1 and purity.

The benchmark folder (scripts/make_benchmark.py) has ``listings.csv`` with
``listing_id,image,pin_id,photo_group,kind``; re-uploads of one photo share
``photo_group``. ``photo`` mode is scored against ``photo_group``, ``pin``
mode against ``pin_id``. Listings are embedded once (into ``--cache``) and
grouped under each setting.

``--transformed`` adds, for every original listing, four copies that a seller
dodging a duplicate check might make (turned with black corners, turned and
cropped back to the largest upright rectangle inside, mirrored, mirrored and
turned; angles cycle through 7, 30, 45, 90, 137 and 180 degrees; each shrunk
and re-compressed), in the original's photo group, and reports per edit the
share of copies grouped with their original.

    python scripts/eval_dedup.py /tmp/bs1 --model local-dir:clip-b32
    python scripts/eval_dedup.py /tmp/bs1 --tiny-random     # plumbing check only: random weights
    python scripts/eval_dedup.py /tmp/bs1 --tiny-random --transformed
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinid.dedup import DedupOptions, Listing, find_groups, group_stats, read_listings  # noqa: E402
from pinid.encoder.cache import embed_files  # noqa: E402
from pinid.dedup.metrics import pairwise_scores  # noqa: E402
from pinid.encoder.cache import EmbeddingCache  # noqa: E402
from pinid.encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED, Encoder, EncoderSpec, save_local_dir  # noqa: E402
from pinid.synth.edits import turn  # noqa: E402

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


ANGLES = (7, 30, 45, 90, 137, 180)
EDITS = ("turned", "turned-cropped", "mirrored", "mirrored-turned")


def transformed_copies(bench: Path, truth: dict[str, dict[str, str]], folder: Path) -> dict[str, dict[str, str]]:
    """Write the copies of every original listing into ``folder``; their truth rows by listing id."""
    rng = np.random.default_rng(0)
    copies: dict[str, dict[str, str]] = {}
    originals = [row for row in truth.values() if row["kind"] == "original"]
    for number, row in enumerate(originals):
        image = Image.open(bench / row["image"]).convert("RGB")
        mirrored = ImageOps.mirror(image)
        angle = [ANGLES[(number + shift) % len(ANGLES)] for shift in range(3)]
        edits = {"turned": turn(image, angle[0]), "turned-cropped": turn(image, angle[1], crop_back=True),
                 "mirrored": mirrored, "mirrored-turned": turn(mirrored, angle[2], crop_back=bool(number % 2))}
        for edit, edited in edits.items():
            scale = rng.uniform(0.5, 0.9)
            path = folder / f"{row['listing_id']}-{edit}.jpg"
            edited.resize((max(64, round(edited.width * scale)), max(64, round(edited.height * scale))),
                          Image.Resampling.BILINEAR).save(path, quality=int(rng.integers(60, 90)))
            copies[f"{row['listing_id']}-{edit}"] = {**row, "image": str(path), "kind": edit,
                                                      "original": row["listing_id"]}
    return copies


def copies_grouped(groups: dict[str, str], copies: dict[str, dict[str, str]]) -> dict[str, float]:
    """Per edit, the share of copies in the same group as their original."""
    shares = {}
    for edit in EDITS:
        mine = [row for key, row in copies.items() if row["kind"] == edit]
        together = [key for key, row in copies.items() if row["kind"] == edit
                    and groups.get(key) is not None and groups.get(key) == groups.get(row["original"])]
        shares[edit] = len(together) / max(1, len(mine))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="benchmark folder with listings.csv")
    parser.add_argument("--model", default=None)
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--tiny-random", action="store_true", help="use a tiny random-weight model (no download)")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache [default: a temporary folder]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--transformed", action="store_true",
                        help="add turned and mirrored copies of every original listing (see the docstring)")
    args = parser.parse_args()

    manifest = args.bench / "listings.csv"
    with open(manifest, newline="", encoding="utf-8") as handle:
        truth = {row["listing_id"]: row for row in csv.DictReader(handle)}
    listings = read_listings(manifest)
    with tempfile.TemporaryDirectory() as scratch:
        copies: dict[str, dict[str, str]] = {}
        if args.transformed:
            (Path(scratch) / "copies").mkdir()
            copies = transformed_copies(args.bench, truth, Path(scratch) / "copies")
            truth.update(copies)
            listings += [Listing(key, Path(row["image"])) for key, row in copies.items()]
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
            groups = {row.listing_id: row.group_id for row in rows if row.group_id}
            scores = pairwise_scores(groups, {key: row[column] for key, row in truth.items()})
            results.append({"setting": label, "truth": column, **scores, **group_stats(rows), "seconds": seconds,
                            **({"copies_grouped": copies_grouped(groups, copies)} if copies else {})})
    model = "tiny RANDOM weights" if args.tiny_random else encoder.spec.describe()
    if args.json:
        print(json.dumps({"model": model, "listings": len(listings), "transformed_copies": len(copies),
                          "embed_seconds": embed_seconds, "results": results}, indent=2))
        return
    print(f"dedup on {manifest}: {len(listings)} listings, model {model}, "
          f"embedded in {embed_seconds:.1f} s ({embedded.encoded} encoded, {embedded.cached} from cache)\n")
    print("| setting | truth | true pairs | predicted pairs | precision | recall | F1 | purity | groups |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['setting']} | {r['truth']} | {int(r['true_pairs'])} | {int(r['predicted_pairs'])} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['purity']:.3f} | {r['groups']} |")
    if copies:
        print(f"\n{len(copies)} transformed copies of {len(copies) // len(EDITS)} original listings: "
              "share grouped with their original\n")
        print("| setting | " + " | ".join(EDITS) + " |")
        print("| --- |" + " ---: |" * len(EDITS))
        for r in results:
            print(f"| {r['setting']} | " + " | ".join(f"{r['copies_grouped'][edit]:.3f}" for edit in EDITS) + " |")


if __name__ == "__main__":
    main()
