"""The CLIP vector index at scale: build time, recall@10 against exact, one-query latency, memory, file size.

Usage: python scripts/bench_ann.py [--n 1000000] [--dim 512] [--queries 1000] [--index-type auto]
                                   [--probes 16,32,64] [--flat-n 100000] [--threads 2]

Data: clustered synthetic unit vectors, not uniform noise (nearest neighbours of uniform noise are
meaningless). ``--clusters`` centres on the sphere share a common direction and one of 64 "super" directions,
as real CLIP embeddings do; members are centre + Gaussian noise of a per-cluster spread, normalised, in
clusters of lognormal sizes. A query is a perturbed indexed member (cosine about 0.9 to it, like a photo of
a pin to its reference image), itself not in the index. Everything is seeded and generated in chunks, so no
process ever holds all n x dim vectors.

Rows: the configuration ``pinid.index.vectors.choose_vector_index`` picks for ``--n`` (or ``--index-type``),
once per ``--probes`` value for IVF, and exact (flat) at ``--flat-n`` ("100k exact as today"; 0 leaves it out).
Each build runs in its own process (build s = training + adding, not data generation; builder RSS = that
process's peak). The written index is then loaded in a fresh process that searches the queries one at a time,
as ``pinid identify`` does (reader RSS = its peak (VmHWM), p50/p99 = per-query latency after 10 warm-up queries).
Recall@10 = share of the exact top 10 (NumPy, chunk-wise) found in the index's top 10. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pinid.index.vectors import (TRAINING_POINTS_PER_LIST, VectorIndexSpec, add_vectors, choose_vector_index,
                                 make_searcher, new_vector_index, spec_of)

TARGETS = {"build": 15 * 60.0, "recall": 0.98, "p50": 5.0, "p99": 20.0, "rss": 1536.0}
QUERY_NOISE = 0.5  # query = member + this much noise: cosine ~0.9 to its source
DEPTH = 10


class Synthetic:
    """Seeded clustered unit vectors; chunk ``i`` is always the same whatever else was generated."""

    def __init__(self, n: int, dim: int, clusters: int, seed: int, chunk: int) -> None:
        self.n, self.dim, self.seed, self.chunk = n, dim, seed, chunk
        rng = np.random.default_rng([seed, 0])
        common = _unit(rng.standard_normal(dim))
        supers = _unit(rng.standard_normal((64, dim)))
        own = _unit(rng.standard_normal((clusters, dim)))
        self.centres = _unit(0.5 * common + 0.6 * supers[rng.integers(0, 64, clusters)] + 0.6 * own)
        sizes = rng.lognormal(0.0, 1.0, clusters)
        self.weights = sizes / sizes.sum()
        self.spread = rng.uniform(0.5, 0.9, clusters).astype(np.float32)

    def chunks(self, limit: int | None = None):
        """(first row, vectors) for rows 0 .. min(n, limit)."""
        end = self.n if limit is None else min(self.n, limit)
        for start in range(0, end, self.chunk):
            yield start, self.rows(start // self.chunk)[: end - start]

    def rows(self, number: int) -> np.ndarray:
        start = number * self.chunk
        size = min(self.chunk, self.n - start)
        rng = np.random.default_rng([self.seed, 1, number])
        members = rng.choice(len(self.centres), size, p=self.weights)
        noise = rng.standard_normal((size, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        return _unit(self.centres[members].astype(np.float32) + self.spread[members, None] * noise)

    def queries(self, count: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 2])
        sources = np.sort(rng.choice(self.n, min(count, self.n), replace=False))
        picked = []
        for number in np.unique(sources // self.chunk):
            rows = self.rows(int(number))
            picked.append(rows[sources[sources // self.chunk == number] - number * self.chunk])
        found = np.concatenate(picked)[rng.permutation(len(sources))]
        noise = rng.standard_normal(found.shape, dtype=np.float32) / np.sqrt(self.dim)
        return _unit(found + QUERY_NOISE * noise)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def exact_top(data: Synthetic, queries: np.ndarray, depth: int) -> np.ndarray:
    """Exact top-``depth`` ids per query, merged chunk by chunk."""
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    for start, rows in data.chunks():
        scores = np.concatenate([best_scores, queries @ rows.T], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(np.arange(start, start + len(rows)),
                                                        (len(queries), len(rows)))], axis=1)
        keep = np.argpartition(-scores, min(depth, scores.shape[1] - 1), axis=1)[:, :depth]
        best_scores = np.take_along_axis(scores, keep, 1)
        best_ids = np.take_along_axis(ids, keep, 1)
    return best_ids


def build(args: argparse.Namespace) -> None:
    """Child process: build the index for ``--spec`` over the synthetic rows, write it, print JSON."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    data = Synthetic(args.n, args.dim, args.clusters, args.seed, args.chunk)
    spec = VectorIndexSpec.from_dict(json.loads(args.build))
    training = None
    if spec.kind != "flat":
        training = np.concatenate([rows for _, rows in data.chunks(spec.lists * TRAINING_POINTS_PER_LIST)])
    started = time.perf_counter()
    index = new_vector_index(spec, args.dim, training)
    train_s = time.perf_counter() - started
    del training
    add_s = 0.0
    for start, rows in data.chunks():
        started = time.perf_counter()
        add_vectors(index, rows, np.arange(start, start + len(rows), dtype=np.int64))
        add_s += time.perf_counter() - started
    faiss.write_index(index, args.output)
    print(json.dumps({"train_s": train_s, "add_s": add_s, "rss_mb": _peak_rss_mb(),
                      "spec": spec_of(index).to_dict()}))


def read(args: argparse.Namespace) -> None:
    """Child process: load the index as a reader would, search the queries one at a time, print JSON."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    spec = VectorIndexSpec.from_dict(json.loads(args.read))
    if spec.kind == "flat":  # the exact searcher runs in torch (imported only for it): --threads, as pinid sets
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    searcher = make_searcher(faiss.read_index(args.output), spec)
    load_s = time.perf_counter() - started
    queries = np.load(args.query_file)
    for query in queries[:10]:
        searcher.search(query[None], DEPTH)
    found = np.empty((len(queries), DEPTH), dtype=np.int64)
    times = np.empty(len(queries))
    for i, query in enumerate(queries):
        started = time.perf_counter()
        _, ids = searcher.search(query[None], DEPTH)
        times[i] = time.perf_counter() - started
        found[i, : ids.shape[1]] = ids[0]
        found[i, ids.shape[1]:] = -1
    np.save(args.found_file, found)
    print(json.dumps({"load_s": load_s, "p50": float(np.percentile(times, 50) * 1e3),
                      "p99": float(np.percentile(times, 99) * 1e3), "rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
    would report its parent's peak (the ground truth's) when that is higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _child(args: argparse.Namespace, n: int, *extra: str) -> dict:
    command = [sys.executable, __file__, "--n", str(n), "--dim", str(args.dim), "--clusters", str(args.clusters),
               "--seed", str(args.seed), "--chunk", str(args.chunk), "--threads", str(args.threads), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_ann: child failed ({done.returncode}): {' '.join(command)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mark(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=20_000, help="rows generated at a time")
    parser.add_argument("--index-type", default="auto", help="auto, flat, ivf-sq8 or ivf-fp16")
    parser.add_argument("--probes", default="", help="comma-separated probes to try (default: the chosen one)")
    parser.add_argument("--lists", type=int, default=0, help="IVF lists (default: the chosen number)")
    parser.add_argument("--flat-n", type=int, default=100_000, help="size of the exact row (0: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", help="folder to write the indexes to (default: a temporary one)")
    parser.add_argument("--build", help=argparse.SUPPRESS)  # child: spec JSON to build
    parser.add_argument("--read", help=argparse.SUPPRESS)  # child: spec JSON to read with
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--query-file", help=argparse.SUPPRESS)
    parser.add_argument("--found-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        return build(args)
    if args.read:
        return read(args)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    spec = choose_vector_index(args.n, args.index_type)
    if args.lists and spec.kind != "flat":
        spec = VectorIndexSpec(spec.kind, args.lists, min(spec.probes, args.lists))
    configs = [(args.n, spec)]
    flat_n = min(args.flat_n, args.n)
    if flat_n and (flat_n, "flat") != (args.n, spec.kind):
        configs.append((flat_n, choose_vector_index(flat_n, "flat")))
    probes = [int(p) for p in args.probes.split(",") if p.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for n, config in configs:
            data = Synthetic(n, args.dim, args.clusters, args.seed, args.chunk)
            queries = data.queries(args.queries)
            query_file = folder / f"queries-{n}.npy"
            np.save(query_file, queries)
            truth = exact_top(data, queries, DEPTH)
            output = folder / f"vectors-{config.kind}-{n}.faiss"
            built = _child(args, n, "--build", json.dumps(config.to_dict()), "--output", str(output))
            actual = VectorIndexSpec.from_dict(built["spec"])
            for probe in (probes if actual.kind != "flat" and probes else [actual.probes]):
                reading = VectorIndexSpec(actual.kind, actual.lists, min(probe, actual.lists) if probe else 0)
                found_file = folder / "found.npy"
                reader = _child(args, n, "--read", json.dumps(reading.to_dict()), "--output", str(output),
                                "--query-file", str(query_file), "--found-file", str(found_file))
                found = np.load(found_file)
                recall = float(np.mean([len(set(t) & set(f)) / DEPTH for t, f in zip(truth, found)]))
                rows.append((n, reading, built, reader, recall, output.stat().st_size / 2**20))
    print(f"pinid vector index benchmark: {args.dim} dims, {args.queries} queries, {args.clusters} clusters, "
          f"seed {args.seed}, {args.threads} threads, top {DEPTH}")
    print()
    print(f"| configuration | build s (<= {TARGETS['build']:.0f}) | recall@10 (>= {TARGETS['recall']}) "
          f"| p50 ms (<= {TARGETS['p50']:.0f}) | p99 ms (<= {TARGETS['p99']:.0f}) "
          f"| reader RSS MB (<= {TARGETS['rss']:.0f}) | builder RSS MB | file MB | load s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, reading, built, reader, recall, size in rows:
        name = f"{n:,} x {args.dim} {reading.kind}" + (
            f", {reading.lists} lists, {reading.probes} probes" if reading.kind != "flat" else "")
        build_s = built["train_s"] + built["add_s"]
        print(f"| {name} | {build_s:.1f} (train {built['train_s']:.1f}) {_mark(build_s, TARGETS['build'])} "
              f"| {recall:.4f} {_mark(recall, TARGETS['recall'], True)} "
              f"| {reader['p50']:.2f} {_mark(reader['p50'], TARGETS['p50'])} "
              f"| {reader['p99']:.2f} {_mark(reader['p99'], TARGETS['p99'])} "
              f"| {reader['rss_mb']:.0f} {_mark(reader['rss_mb'], TARGETS['rss'])} "
              f"| {built['rss_mb']:.0f} | {size:.1f} | {reader['load_s']:.2f} |")


if __name__ == "__main__":
    main()
