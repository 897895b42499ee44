"""Scaling of `pinid build-index --ray`: images/s with 1 and 2 Ray workers, and the one-process build beside them.

Usage: python scripts/bench_ray.py [--images 120] [--workers 1,2] [--model ViT-B-32-256] [--encoder clip|local]

Each row builds the same catalogue from empty caches: first the ordinary
one-process build (the decoding, encoding and feature threads of `pinid
build-index`), then a Ray build per worker count on a Ray instance started on
this machine (`ray.init()`: all its cores). Speed does not depend on the
weights, so the encoder is the architecture with random weights in a
temporary local-dir checkpoint (--weights local-dir:PATH for real ones).

It prints one Markdown table: seconds and images/s for the whole build, the
seconds of the encoding and local-feature stages, and the speed-up over the
one-process build. Ray's start (a few seconds) is timed apart: a cluster runs
many jobs per start. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from pinid.catalogue import read_catalogue
from pinid.cluster import RayOptions, build_index_on_ray, ray_session
from pinid.encoder import Encoder, save_local_dir
from pinid.encoder.cache import FEATURE_CACHE_DIR, EmbeddingCache
from pinid.identify.recogniser import LocalConfig
from pinid.index import PinIndex
from pinid.index.build import BuildOptions
from pinid.local.cache import FeatureCache


def make_catalogue(folder: Path, count: int, side: int = 640) -> Path:
    """``count`` pin-like product shots (enamel shapes on white), one folder per pin."""
    rng = np.random.default_rng(0)
    for i in range(count):
        image = Image.new("RGB", (side, side), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(4, 9))):
            box = sorted(rng.integers(side // 8, side * 7 // 8, 2)), sorted(rng.integers(side // 8, side * 7 // 8, 2))
            colour = tuple(int(v) for v in rng.integers(0, 230, 3))
            shape = [int(box[0][0]), int(box[1][0]), int(box[0][1]) + 8, int(box[1][1]) + 8]
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=colour, outline=(40, 40, 40),
                                                                     width=4)
        pin = folder / f"pin-{i:05d}"
        pin.mkdir(parents=True)
        image.save(pin / "front.jpg", quality=92)
    return folder


class StageClock:
    """Seconds per stage, from the build's own progress calls (a stage ends where the next begins)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.marks: list[tuple[str, float]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.marks or self.marks[-1][0] != stage:
            self.marks.append((stage, time.perf_counter()))
        if done >= total:
            self.marks.append((stage + " end", time.perf_counter()))

    def seconds(self, prefix: str) -> float:
        starts = [at for stage, at in self.marks if stage.startswith(prefix) and not stage.endswith(" end")]
        ends = [at for stage, at in self.marks if stage.startswith(prefix) and stage.endswith(" end")]
        if not ends:
            return float("nan")
        before = [at for stage, at in self.marks if at < min(starts)] if starts else []
        return max(ends) - (max(before) if before else self.started)


def fresh_options(folder: Path, encoder: Encoder | None) -> BuildOptions:
    cache = EmbeddingCache.open(folder, encoder.identity()) if encoder is not None else None
    return BuildOptions(cache=cache, feature_cache=FeatureCache.open(folder / FEATURE_CACHE_DIR,
                                                                    LocalConfig().features))


def timed_build(build: Callable[[StageClock], Any]) -> tuple[float, StageClock]:
    clock = StageClock()
    started = time.perf_counter()
    build(clock)
    return time.perf_counter() - started, clock


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of worker counts >= 1")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120, help="catalogue images (one per pin)")
    parser.add_argument("--workers", type=worker_counts, default=worker_counts("1,2"),
                        help="Ray workers per row, comma-separated")
    parser.add_argument("--model", default="ViT-B-32-256", help="architecture for random weights")
    parser.add_argument("--weights", default=None, help="use these weights instead (e.g. local-dir:PATH)")
    parser.add_argument("--encoder", choices=["clip", "local"], default="clip",
                        help="local: local features only, no model")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.images < 1:
        parser.error("--images must be at least 1")

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="pinid-bench-ray-") as tmp:
        root = Path(tmp)
        encoder = None
        weights_note = "none (local features only)"
        spec = None
        if args.encoder == "clip":
            if args.weights:
                spec = args.weights
                weights_note = args.weights
            else:
                spec = f"local-dir:{save_local_dir(root / 'model', args.model, random_weights=True)}"
                weights_note = f"{args.model}, random weights"
            encoder = Encoder.load(spec, None, device="cpu", offline=True)
        catalogue = read_catalogue(make_catalogue(root / "catalogue", args.images))

        def one_process(clock: StageClock) -> None:
            options = fresh_options(root / "cache-local", encoder)
            PinIndex.build(catalogue, root / "index-local", encoder, batch_size=args.batch_size, cache=options.cache,
                           feature_cache=options.feature_cache, on_progress=clock)

        seconds, clock = timed_build(one_process)
        base = seconds
        rows.append(["one process (2 threads)", f"{seconds:.1f}", f"{args.images / seconds:.2f}",
                     f"{clock.seconds('encoding'):.1f}" if encoder else "-", f"{clock.seconds('local features'):.1f}",
                     "1.00"])

        started = time.perf_counter()
        with ray_session(None, quiet=True) as ray:
            ray_start = time.perf_counter() - started
            cpus = int(ray.cluster_resources().get("CPU", 0))
            for workers in args.workers:
                def on_ray(clock: StageClock, workers: int = workers) -> None:
                    options = fresh_options(root / f"cache-ray{workers}", encoder)
                    build_index_on_ray(catalogue, root / f"index-ray{workers}", encoder, options,
                                       RayOptions(workers=workers, batch_size=args.batch_size), offline=True,
                                       on_progress=clock)

                seconds, clock = timed_build(on_ray)
                rows.append([f"Ray, {workers} worker{'s' if workers > 1 else ''}", f"{seconds:.1f}",
                             f"{args.images / seconds:.2f}",
                             f"{clock.seconds('encoding (ray)'):.1f}" if encoder else "-",
                             f"{clock.seconds('local features (ray)'):.1f}", f"{base / seconds:.2f}"])

    print(f"# pinid build-index: one process and Ray ({args.images} images, encoder {weights_note})")
    print(f"machine: {platform.machine()}, Ray instance with {cpus} CPUs (started in {ray_start:.1f} s, "
          "not counted); Python", sys.version.split()[0])
    print()
    print("| build | seconds | images/s | encoding s | local features s | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
