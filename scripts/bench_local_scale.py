"""Local features at scale: a synthetic 100k-reference-image index, its identify RSS and latency, its size.

Usage:
    python scripts/bench_local_scale.py --bench BENCH_DIR -o OUT_INDEX [--images 100000] [--real 300]
        [--queries 100] [--real-from INDEX] [--workers 2] [--threads 2] [--keep] [--fast-vocabulary]
        [--measure-only | --rebuild-vocabulary] [--vote NAME=VALUE ...]

How the references are made (say so wherever a figure from here is quoted):

* *Real* entries: ``--real`` pins of ``BENCH_DIR/catalogue`` that have single-pin query photos,
  extracted with ``reference_image`` + ``reference_entry`` exactly as a build does (or read from
  the local store of an existing index, ``--real-from``, to skip the ~1 s/image extraction). They
  keep their real pin ids, so the benchmark's photos of them can be identified and scored.
* *Synthetic* entries fill the index up to ``--images``: each is a perturbed copy of a real entry
  of another pin (pins not indexed as real when there are any, so no copy is a near-clone of a
  queried pin): every descriptor code gets Gaussian noise whose length is the median distance from
  a real descriptor to its nearest neighbour in another image (so a copy is about as far from its
  source as two different pins are from each other), keypoints are turned and scaled as one piece
  (random angle, scale 0.7-1.4) and jittered (2 px, 10 degrees, 10 % size), and the colour
  thumbnail's a/b channels are swapped or mirrored (a different colourway). Each gets its own pin.

Everything else is what a build writes, from pinid's own pieces: ``write_segment`` (one segment per
10,000 images), ``vote_positions`` (the vocabulary's per-image budget), one vocabulary shard per
segment sharing one trained template (``train_vocabulary``, ``new_shard``, ``write_shard``), the SQLite
table (``write_database`` for the real pins, then plain rows for the synthetic ones) and
``new_manifest``; ``PinIndex.load`` opens the result like any index. ``--fast-vocabulary`` fills the
same shards but finds each descriptor's list through an HNSW graph over the trained centroids
instead of an exact scan (at 100k images: minutes instead of most of an hour on 2 busy cores; the
same list but for rare near-ties). ``--rebuild-vocabulary`` redoes only the shards (after a change to
``vote_rows``); ``--measure-only`` measures again, e.g. with ``--vote NAME=VALUE`` query-side
settings.

Measured in a fresh process (``PinIndex.load(encoder=None)``, then one photo at a time):
* identify RSS: peak resident memory of that process (VmHWM), load included;
* identify p50 local-only: ``Recogniser.identify(load_image(photo))``, what ``PinIndex.identify`` does
  for an index without CLIP vectors (decode included), and recall@1 of those answers; wall time and
  the process's CPU time (which other processes on a busy machine do not inflate);
* identify p50 with CLIP candidates: *simulated*: ``Recogniser.identify(photo, clip)`` with a made-up
  CLIP top list of 50 (the true image at a random place among 49 random others); the CLIP encoding
  of the photo is not included, and recall on this path is not reported (the list is made up);
* index size: every file of the index directory.
Run it on a quiet machine: other processes distort 2-thread timings.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = {"rss": 3.0, "local": 500.0, "clip": 300.0, "disk": 8.0}  # GB, ms, ms, GB
SEGMENT_IMAGES = 10_000
CLIP_LIST = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, required=True, help="a benchmark folder (catalogue/, queries.csv)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the index folder to write (replaced)")
    parser.add_argument("--images", type=int, default=100_000, help="reference images in the index, all told")
    parser.add_argument("--real", type=int, default=300, help="real pins (with query photos) among them")
    parser.add_argument("--queries", type=int, default=100, help="query photos of the real pins")
    parser.add_argument("--real-from", type=Path, help="read real entries from this index's local store instead "
                        "of extracting them (an older single-segment local/ folder works too)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the index (default: delete it when measured)")
    parser.add_argument("--fast-vocabulary", action="store_true",
                        help="assign descriptors to the vocabulary's lists through an HNSW graph over its trained "
                             "centroids instead of build_vocabulary's exact scan (same lists, nearly; minutes, not an "
                             "hour, on 2 cores at 100k images)")
    parser.add_argument("--vote", action="append", default=[], metavar="NAME=VALUE",
                        help="measure with this VoteConfig setting changed (query side: e.g. inverted_lists_probed=8, "
                             "vote_query_descriptors=1000); repeatable")
    parser.add_argument("--measure-only", action="store_true", help="measure an index this script wrote before")
    parser.add_argument("--rebuild-vocabulary", action="store_true",
                        help="rebuild the vocabulary of an index this script wrote before (today's vote_rows), "
                             "then measure it")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the fresh measuring process
    args = parser.parse_args()
    if args.measure:
        measure(args)
        return
    started = time.perf_counter()
    if args.rebuild_vocabulary:
        rebuild_vocabulary(args)
    queries = args.queries if args.measure_only or args.rebuild_vocabulary else synthesise(args)
    built = time.perf_counter() - started
    done = subprocess.run([sys.executable, __file__, "--measure", "--bench", str(args.bench), "-o", str(args.output),
                           "--threads", str(args.threads), "--seed", str(args.seed), "--queries", str(queries),
                           *[f"--vote={setting}" for setting in args.vote]],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"measuring failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    size = sum(path.stat().st_size for path in args.output.rglob("*") if path.is_file())
    print_table(args, result, size, built)
    if not args.keep and not args.measure_only and not args.rebuild_vocabulary:
        import shutil

        shutil.rmtree(args.output)


# ------------------------------------------------------------------------------------------- synthesis
def synthesise(args: argparse.Namespace) -> int:
    """Write the index; returns how many query photos of its real pins there are to measure with."""
    from pinid.catalogue import Catalogue, read_catalogue
    from pinid.index.build import new_manifest
    from pinid.index.format import DATABASE_FILE, LOCAL_DIR, MANIFEST_FILE
    from pinid.index.storage import write_database
    from pinid.local.store import Segment, segment_name, write_segment
    from pinid.local.vote import vote_positions
    from pinid.identify.recogniser import LocalConfig

    config = LocalConfig()
    rng = np.random.default_rng(args.seed)
    catalogue = read_catalogue(args.bench / "catalogue")
    queried = {row["pin_id"] for row in _query_rows(args.bench)}
    with_photos = [pin for pin in catalogue.pins if pin.pin_id in queried and pin.images]
    real_pins = [with_photos[i] for i in sorted(rng.permutation(len(with_photos))[:args.real])]
    real_ids = {pin.pin_id for pin in real_pins}
    others = [pin for pin in catalogue.pins if pin.pin_id not in real_ids and pin.images]
    real_entries, source_entries = _real_entries(args, real_pins, others)
    if not source_entries:
        source_entries = list(real_entries.values())
    real = [(pin, real_entries[pin.pin_id]) for pin in real_pins if pin.pin_id in real_entries]
    synthetic = max(0, args.images - len(real))
    sigma = _noise_sigma(source_entries, rng)
    noise = np.rint(rng.normal(0.0, sigma, (1 << 20, 64))).astype(np.int16)  # drawn from at random offsets
    print(f"{len(real)} real entries, {synthetic:,} synthetic from {len(source_entries)} sources "
          f"(descriptor noise sigma {sigma:.1f} per code)", file=sys.stderr, flush=True)

    out = args.output
    if out.exists():
        import shutil

        shutil.rmtree(out)
    (out / LOCAL_DIR).mkdir(parents=True)
    total = len(real) + synthetic
    segments, selected = [], []
    first_row = 0
    for number, start in enumerate(range(0, total, SEGMENT_IMAGES)):
        ids = range(start, min(total, start + SEGMENT_IMAGES))
        entries = [(image_id, real[image_id][1] if image_id < len(real)
                    else _perturbed(source_entries[int(rng.integers(len(source_entries)))], noise, rng))
                   for image_id in ids]
        rows, descriptors = write_segment(out / LOCAL_DIR / segment_name(number), entries)
        segments.append(Segment(segment_name(number), first_row, rows))
        keypoints = np.concatenate([entry.features.keypoints for _, entry in entries])
        owners = np.repeat([image_id for image_id, _ in entries], [len(entry.features) for _, entry in entries])
        keep = vote_positions(keypoints, owners, config.vote, total)  # the vocabulary's per-image budget
        selected.append((first_row + keep, descriptors[keep]))
        first_row += rows
        print(f"segment {number}: {len(entries):,} images, {rows:,} rows", file=sys.stderr, flush=True)
    count = _write_shards(out, segments, selected, config.vote, None, args.fast_vocabulary)
    print(f"vocabulary: {count:,} of {first_row:,} descriptors", file=sys.stderr, flush=True)
    del selected

    write_database(out / DATABASE_FILE, [(pin, [(image_id, pin.images[0])]) for image_id, (pin, _) in enumerate(real)])
    connection = sqlite3.connect(out / DATABASE_FILE)
    with connection:
        base = len(real)
        connection.executemany("INSERT INTO pins VALUES (?, ?, ?, ?)",
                               [(base + i, f"synthetic-{base + i:07d}", f"synthetic pin {base + i}", "{}")
                                for i in range(synthetic)])
        connection.executemany("INSERT INTO images VALUES (?, ?, ?, ?)",
                               [(base + i, base + i, f"synthetic:{base + i}", f"{base + i:064x}")
                                for i in range(synthetic)])
    connection.close()
    source = Catalogue(catalogue.source, [pin for pin, _ in real])
    manifest = new_manifest(None, source, pins=total, images=total, descriptors=count, segments=segments,
                            config=config)
    (out / MANIFEST_FILE).write_bytes(manifest.to_json())
    photos = sum(1 for row in _query_rows(args.bench) if row["pin_id"] in {pin.pin_id for pin, _ in real})
    return min(photos, args.queries)


def rebuild_vocabulary(args: argparse.Namespace) -> None:
    """New vocabulary shards for the index at ``args.output`` from its segments' files (today's
    ``vote_positions``), reusing the shards' trained lists, and its manifest's count."""
    import dataclasses

    from pinid.index.format import LOCAL_DIR, MANIFEST_FILE, read_manifest
    from pinid.local.vocabulary import read_vocabulary
    from pinid.local.vote import vote_positions

    manifest = read_manifest(args.output)
    config = manifest.config().vote
    template = read_vocabulary(args.output / LOCAL_DIR, [s.name for s in manifest.segments], None, config).template()
    selected = []
    for segment in manifest.segments:
        folder = args.output / LOCAL_DIR / segment.name
        images = np.load(folder / "images.npy", allow_pickle=False)
        codes = np.load(folder / "descriptors.npy", mmap_mode="r", allow_pickle=False)
        keypoints = np.load(folder / "keypoints.npy", mmap_mode="r", allow_pickle=False)
        live = np.concatenate([np.arange(start, end) for start, end in images[:, 1:3].tolist()])
        owners = np.repeat(images[:, 0], images[:, 2] - images[:, 1])
        keep = live[vote_positions(np.asarray(keypoints[live]), owners, config, manifest.images)]
        selected.append((segment.first_row + keep, np.asarray(codes[keep])))
    count = _write_shards(args.output, manifest.segments, selected, config, template, args.fast_vocabulary)
    print(f"vocabulary: {count:,} descriptors", file=sys.stderr, flush=True)
    updated = dataclasses.replace(manifest, local_features={**manifest.local_features, "descriptors": count})
    (args.output / MANIFEST_FILE).write_bytes(updated.to_json())


def _write_shards(out: Path, segments: list, selected: list, config, template, fast: bool) -> int:
    """One vocabulary shard per segment (what a build writes), sharing one trained template; returns the count.

    ``fast``: each descriptor's list is found through an HNSW graph over the template's centroids
    instead of the exact scan ``add`` does (the same list but for rare near-ties; minutes instead
    of most of an hour for 15 M descriptors on 2 cores).
    """
    import faiss

    from pinid.index.format import LOCAL_DIR
    from pinid.local.vocabulary import empty_template, new_shard, write_shard
    from pinid.local.vote import train_vocabulary

    total = sum(len(rows) for rows, _ in selected)
    started = time.perf_counter()
    if template is None:
        everything = np.concatenate([descriptors for _, descriptors in selected])
        template = train_vocabulary(everything, config=config, count=total)
        del everything
        print(f"vocabulary: trained in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    graph = None
    if fast and template is not None:
        lists = faiss.extract_index_ivf(template)
        graph = faiss.IndexHNSWFlat(lists.d, 32)
        graph.hnsw.efConstruction = 80
        graph.add(faiss.downcast_index(lists.quantizer).reconstruct_n(0, lists.nlist))
        graph.hnsw.efSearch = 64
    for segment, (rows, descriptors) in zip(segments, selected):
        if graph is None:
            shard = new_shard(descriptors, rows, template)
        else:
            shard = empty_template(template)
            for start in range(0, len(rows), 1 << 20):
                data = np.ascontiguousarray(descriptors[start:start + (1 << 20)], dtype=np.float32)
                ids = np.ascontiguousarray(rows[start:start + (1 << 20)], dtype=np.int64)
                _, assigned = graph.search(data, 1)
                shard.add_core(len(data), faiss.swig_ptr(data), faiss.swig_ptr(ids),
                               faiss.swig_ptr(np.ascontiguousarray(assigned[:, 0], dtype=np.int64)))
        write_shard(shard, out / LOCAL_DIR / segment.name)
    print(f"vocabulary: {total:,} descriptors in {len(segments)} shards, {time.perf_counter() - started:.0f} s",
          file=sys.stderr, flush=True)
    return total


def _query_rows(bench: Path) -> list[dict[str, str]]:
    with open(bench / "queries.csv", newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["split"] == "single" and row["pin_id"]]


def _real_entries(args: argparse.Namespace, real_pins: list, others: list) -> tuple[dict, list]:
    """(pin id -> entry of its first image for the real pins, entries of other pins to copy from)."""
    if args.real_from is not None:
        return _entries_from_index(args.real_from, {pin.pin_id for pin in real_pins})
    from pinid.index.build import BuildOptions, reference_entries

    wanted = real_pins + others[:max(0, len(real_pins))]  # as many other pins as real ones to copy from
    entries, _ = reference_entries([pin.images[0] for pin in wanted], BuildOptions(workers=args.workers), None)
    found = {pin.pin_id: entry for pin, entry in zip(wanted, entries) if entry is not None}
    return ({pin.pin_id: found[pin.pin_id] for pin in real_pins if pin.pin_id in found},
            [found[pin.pin_id] for pin in others if pin.pin_id in found])


def _entries_from_index(folder: Path, real_ids: set[str]) -> tuple[dict, list]:
    from pinid.index.format import read_manifest
    from pinid.index.storage import read_table
    from pinid.local.store import LocalStore, Segment

    table = read_table(folder / "catalogue.sqlite")
    if (folder / "local" / "descriptors.npy").exists():  # an older single-segment layout
        rows = int(np.load(folder / "local" / "descriptors.npy", mmap_mode="r").shape[0])
        store = LocalStore.load(folder / "local", [Segment("", 0, rows)])
    else:
        store = LocalStore.load(folder / "local", read_manifest(folder).segments)
    real: dict = {}
    sources = []
    for image_id, pin_row in zip(table.image_ids.tolist(), table.image_pin_rows.tolist()):
        pin_id = table.pins[pin_row].pin_id
        if pin_id in real_ids:
            real.setdefault(pin_id, store.entry(image_id))
        else:
            sources.append(store.entry(image_id))
    return real, sources


def _noise_sigma(entries: list, rng: np.random.Generator) -> float:
    """Per-code noise whose length is the median distance from a descriptor to its nearest one in another image."""
    import faiss

    picked = [entries[int(i)] for i in rng.permutation(len(entries))[:200]]
    if len(picked) < 2:
        return 8.0
    codes = [np.asarray(entry.features.descriptors, np.float32) for entry in picked]
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(codes)])
    data = np.concatenate(codes)
    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    sample = rng.permutation(len(data))[:2000]
    distances, found = index.search(data[sample], 32)
    nearest = []
    for row, query in enumerate(sample):
        other = owner[found[row]] != owner[query]
        if other.any():
            nearest.append(np.sqrt(distances[row][other][0]))
    return float(np.median(nearest) / np.sqrt(data.shape[1])) if nearest else 8.0


def _perturbed(entry, noise: np.ndarray, rng: np.random.Generator):
    """A synthetic reference entry: ``entry``'s features with noise, turned and scaled, and recoloured.

    The noise rows are a random run of a large bank of Gaussian noise (drawing fresh noise for
    70 M codes would take longer than the rest of the synthesis).
    """
    from pinid.local.features import Features, ReferenceEntry

    features = entry.features
    count = len(features)
    start = int(rng.integers(len(noise) - count))
    codes = np.asarray(features.descriptors, np.int16) + noise[start:start + count]
    descriptors = np.clip(codes, 0, 255).astype(np.uint8)
    keypoints = np.array(features.keypoints, np.float32, copy=True)
    angle, scale = rng.uniform(0, 360), rng.uniform(0.7, 1.4)
    centre = np.array([features.width / 2, features.height / 2], np.float32)
    turn = np.deg2rad(angle)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]], np.float32)
    xy = (keypoints[:, :2] - centre) @ rotation.T * scale + centre * scale + rng.normal(0, 2.0, (count, 2))
    keypoints[:, :2] = xy
    keypoints[:, 2] *= scale * rng.lognormal(0.0, 0.1, count)
    keypoints[:, 3] = (keypoints[:, 3] + angle + rng.normal(0, 10.0, count)) % 360.0
    colour = np.array(entry.colour, copy=True)
    if rng.random() < 0.5:
        colour[..., [1, 2]] = colour[..., [2, 1]]
    else:
        colour[..., 1] = 255 - colour[..., 1]
    width, height = int(round(features.width * scale)), int(round(features.height * scale))
    box = tuple(float(v) * scale for v in entry.pin_box)
    return ReferenceEntry(Features(keypoints, descriptors, max(1, width), max(1, height)), box, colour)


# ------------------------------------------------------------------------------------------- measuring
def measure(args: argparse.Namespace) -> None:
    """In a fresh process: load the index, identify the real pins' photos, report RSS and latencies as JSON."""
    import cv2
    import faiss

    from pinid.images import load_image
    from pinid.index import PinIndex

    cv2.setNumThreads(args.threads)  # torch is not imported: a local-only identify does not need it
    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()
    index = PinIndex.load(args.output, encoder=None)
    loaded = time.perf_counter() - started
    recogniser = index.recogniser
    if args.vote:
        recogniser = _with_vote_settings(recogniser, args.vote)
    pin_image = {}
    for image_id in recogniser.table.image_ids.tolist():
        pin_id = recogniser.table.pins[recogniser.image_pin_rows[image_id]].pin_id
        if not pin_id.startswith("synthetic-"):
            pin_image[pin_id] = image_id
    rows = [row for row in _query_rows(args.bench) if row["pin_id"] in pin_image]
    rng = np.random.default_rng(args.seed)
    rows = [rows[i] for i in sorted(rng.permutation(len(rows))[:args.queries])]
    all_ids = recogniser.table.image_ids
    local_ms, clip_ms, local_cpu, clip_cpu, hits = [], [], [], [], []
    if rows:
        recogniser.identify(load_image(args.bench / rows[0]["image"]))  # warm-up: first-call imports
    for number, row in enumerate(rows):
        path = args.bench / row["image"]
        began, cpu = time.perf_counter(), time.process_time()
        answer = recogniser.identify(load_image(path), query=str(path))  # = PinIndex.identify without CLIP
        local_ms.append(1000 * (time.perf_counter() - began))
        local_cpu.append(1000 * (time.process_time() - cpu))
        hits.append(bool(answer.matches) and answer.matches[0].pin_id == row["pin_id"])
        truth = pin_image[row["pin_id"]]
        others = [int(i) for i in all_ids[rng.permutation(len(all_ids))[:CLIP_LIST]] if i != truth]
        listed = others[:CLIP_LIST - 1]
        listed.insert(int(rng.integers(CLIP_LIST)), truth)
        clip = [(image_id, 0.9 - 0.4 * rank / CLIP_LIST) for rank, image_id in enumerate(listed)]
        photo = load_image(path)
        began, cpu = time.perf_counter(), time.process_time()
        recogniser.identify(photo, clip)
        clip_ms.append(1000 * (time.perf_counter() - began))
        clip_cpu.append(1000 * (time.process_time() - cpu))
        print(f"{number + 1}/{len(rows)}: {local_ms[-1]:.0f} ms local, {clip_ms[-1]:.0f} ms with CLIP list",
              file=sys.stderr, flush=True)
    status = _memory_status()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so this process would report the
    # peak of the parent that synthesised the index
    peak = status.get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rss": peak, "rss_anon": status.get("RssAnon", 0), "rss_file": status.get("RssFile", 0),
                      "torch": "torch" in sys.modules, "load_s": loaded,
                      "local_ms": local_ms, "clip_ms": clip_ms,
                      "local_cpu_ms": local_cpu, "clip_cpu_ms": clip_cpu, "vote": args.vote,
                      "hits": int(sum(hits)), "queries": len(rows), "images": len(all_ids),
                      "vocabulary": int(recogniser.vocabulary.ntotal), "pins": len(index)}))


def _memory_status() -> dict[str, int]:
    """Resident bytes of this process now by kind (Linux): RssAnon (its own memory), RssFile (mapped file pages)."""
    found = {}
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name in ("RssAnon", "RssFile", "VmRSS", "VmHWM"):
                    found[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return found


def _with_vote_settings(recogniser, settings: list[str]):
    """The same store, vocabulary and table, with some VoteConfig settings changed (query-side ones only)."""
    import dataclasses

    from pinid.identify.recogniser import Recogniser
    from pinid.local.vocabulary import Vocabulary

    changes = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        changes[name] = type(getattr(recogniser.config.vote, name))(value)
    config = dataclasses.replace(recogniser.config, vote=dataclasses.replace(recogniser.config.vote, **changes))
    vocabulary = Vocabulary(recogniser.vocabulary.shards, config.vote.inverted_lists_probed)
    vocabulary.exclude(recogniser.store.dead_rows())
    return Recogniser(recogniser.store, vocabulary, recogniser.table, recogniser.calibration, config)


def print_table(args: argparse.Namespace, result: dict, size: int, built: float) -> None:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rss_gb = result["rss"] / 1e9
    local = float(np.median(result["local_ms"])) if result["local_ms"] else float("nan")
    clip = float(np.median(result["clip_ms"])) if result["clip_ms"] else float("nan")
    disk = size / 1e9
    queries = result["queries"]
    print(f"{result['images']:,} reference images ({args.real} real pins, the rest synthetic copies), "
          f"{result['vocabulary']:,} descriptors in the vote's vocabulary; {queries} query photos; "
          f"built in {built:.0f} s, loaded in {result['load_s']:.1f} s")
    print()
    if result["vote"]:
        print(f"vote settings changed for this measurement: {', '.join(result['vote'])}")
    print("wall: elapsed time per photo; CPU: the process's own CPU time per photo (what other processes on a "
          "busy machine do not inflate)")
    print()
    print("| measure | result | target | verdict |")
    print("|---|---|---|---|")
    print(f"| identify RSS (fresh process, peak) | {rss_gb:.2f} GB | <= {TARGETS['rss']:g} GB | "
          f"{verdict(rss_gb <= TARGETS['rss'])} |")
    print(f"| of which at the end: own memory / mapped index files | {result['rss_anon'] / 1e9:.2f} GB / "
          f"{result['rss_file'] / 1e9:.2f} GB | - | - |")
    local_cpu = float(np.median(result["local_cpu_ms"])) if result["local_cpu_ms"] else float("nan")
    clip_cpu = float(np.median(result["clip_cpu_ms"])) if result["clip_cpu_ms"] else float("nan")
    print(f"| identify p50, local only (wall) | {local:.0f} ms | <= {TARGETS['local']:g} ms | "
          f"{verdict(local <= TARGETS['local'])} |")
    print(f"| identify p50, local only (CPU) | {local_cpu:.0f} ms | - | - |")
    print(f"| identify p50, simulated CLIP candidates, encoding excluded (wall) | {clip:.0f} ms | "
          f"<= {TARGETS['clip']:g} ms | {verdict(clip <= TARGETS['clip'])} |")
    print(f"| identify p50, simulated CLIP candidates (CPU) | {clip_cpu:.0f} ms | - | - |")
    print(f"| index size on disk | {disk:.2f} GB | <= {TARGETS['disk']:g} GB | {verdict(disk <= TARGETS['disk'])} |")
    recall = result["hits"] / queries if queries else float("nan")
    print(f"| recall@1, local only | {recall:.3f} ({result['hits']}/{queries}) | reported | - |")


if __name__ == "__main__":
    main()
