"""Benchmark the dedup neighbour-graph and grouping stage at 100k listings from cached embeddings.

Seeded synthetic data with exact ground truth: clustered unit vectors (one
cluster = one pin; 10% of pins are "colourways" close to another pin, the
chaining hazard) and photo hashes (some members are re-uploads: the
original's hashes with a few bits flipped). The vectors go into a real
EmbeddingCache first (not timed); the timed part opens the cache, reads all
vectors back and groups them, as `pinid dedup` does on a re-run.

    python scripts/bench_dedup.py                 # 100k listings, 512 dims
    python scripts/bench_dedup.py --n 20000       # quicker

Prints a table: seconds per stage, peak RSS (resource.getrusage) and the
pairwise scores against the synthetic ground truth.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinid.dedup import DedupOptions, Listing, find_groups  # noqa: E402
from pinid.encoder.cache import Embedded  # noqa: E402
from pinid.dedup.metrics import pairwise_scores  # noqa: E402
from pinid.encoder.cache import EmbeddingCache  # noqa: E402
from pinid.phash import WINDOWS  # noqa: E402


def synthetic(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, hashes, pin label) for ``n`` listings in clusters of 1-6."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(0.45, size=n), 6)
    sizes = sizes[np.cumsum(sizes) <= n]
    sizes = np.append(sizes, n - sizes.sum()) if sizes.sum() < n else sizes
    clusters = len(sizes)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    colourway = rng.random(clusters) < 0.10  # close to the previous pin: cosine ~0.85
    centres[1:][colourway[1:]] = centres[:-1][colourway[1:]] + 0.6 * centres[1:][colourway[1:]]
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = np.repeat(np.arange(clusters), sizes)
    spread = rng.uniform(0.15, 0.4, clusters)[label][:, None]
    vectors = centres[label] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hashes = rng.integers(0, 2**63, size=(n, WINDOWS), dtype=np.int64).astype(np.uint64)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    reupload = (np.arange(n) != np.repeat(first, sizes)) & (rng.random(n) < 0.4)
    flips = (np.uint64(1) << rng.integers(0, 64, size=(n, 3)).astype(np.uint64))
    hashes[reupload] = hashes[np.repeat(first, sizes)[reupload]]
    hashes[reupload, 0] ^= flips[reupload, 0] | flips[reupload, 1] | flips[reupload, 2]
    return vectors.astype(np.float32), hashes, label


def write_cache(folder: Path, args: argparse.Namespace) -> None:
    """Fill an EmbeddingCache with the synthetic data in chunks, as embedding runs write it."""
    vectors, hashes, label = synthetic(args.n, args.dim, args.seed)
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(args.n)]
    cache = EmbeddingCache.open(folder / "cache", {"model": "synthetic", "embedding_dim": args.dim})
    for start in range(0, args.n, 4096):
        cache.add_chunk(digests[start:start + 4096], vectors[start:start + 4096], hashes[start:start + 4096])
    np.save(folder / "labels.npy", label, allow_pickle=False)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.90)
    args = parser.parse_args()

    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        # Data generation runs in a child process, so the peak RSS below is the timed work's alone.
        writer = multiprocessing.get_context("fork").Process(target=write_cache, args=(Path(folder), args))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise SystemExit("generating the synthetic cache failed")
        label = np.load(Path(folder) / "labels.npy")
        digests = [hashlib.sha256(str(i).encode()).digest() for i in range(args.n)]
        identity = {"model": "synthetic", "embedding_dim": args.dim}
        base_mb = peak_mb()
        listings = [Listing(f"l{i}", Path(f"l{i}.jpg")) for i in range(args.n)]

        started = time.perf_counter()
        cache = EmbeddingCache.open(Path(folder) / "cache", identity)
        cached_vectors, cached_hashes = cache.get_many(digests)
        loaded = time.perf_counter()
        rows.append(("open cache + read vectors", loaded - started, peak_mb()))
        embedded = Embedded(np.arange(args.n), digests, cached_vectors, cached_hashes, {}, 0, args.n)
        stages: dict[str, float] = {}
        last = [loaded]

        def progress(stage: str, done: int, total: int) -> None:
            if done == total:
                now = time.perf_counter()
                stages[stage] = now - last[0]
                last[0] = now

        grouped = find_groups(listings, embedded, DedupOptions(mode="pin", min_cosine=args.threshold, confirm_photos=False), progress)
        finished = time.perf_counter()
        rows.append(("kNN graph (FAISS, batched)", stages.get("neighbours", float("nan")), peak_mb()))
        rows.append(("pair checks + guarded union-find", stages.get("grouping", float("nan")), peak_mb()))
        rows.append(("total from cache", finished - started, peak_mb()))

    scores = pairwise_scores({row.listing_id: row.group_id for row in grouped},
                             {f"l{i}": int(label[i]) for i in range(args.n)})
    print(f"pinid dedup benchmark: {args.n} listings, {args.dim} dims, pin mode, threshold {args.threshold}, "
          f"seed {args.seed} (peak RSS before the timed part: {base_mb:.0f} MB; data made in a child process)\n")
    print("| stage | seconds | peak RSS MB |\n| --- | ---: | ---: |")
    for name, seconds, megabytes in rows:
        print(f"| {name} | {seconds:.2f} | {megabytes:.0f} |")
    groups = len({row.group_id for row in grouped if row.group_size > 1})
    print("\n| precision | recall | F1 | purity | groups (>1) | true pairs |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: |\n"
          f"| {scores['precision']:.4f} | {scores['recall']:.4f} | {scores['f1']:.4f} | {scores['purity']:.4f} "
          f"| {groups} | {int(scores['true_pairs'])} |")


if __name__ == "__main__":
    main()
