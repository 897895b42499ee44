"""Reference local-feature extraction speed: images per second, as a build extracts them.

A build decodes each reference image (reduced to
``FeatureConfig.reference_long_side_px``) and calls ``reference_entry`` in a
thread pool (OpenCV releases the GIL). This script does the same for the
first ``--limit`` images of a catalogue folder and prints images/s and
descriptors per image; ``--long-side`` first scales every image to that long
side (the benchmark's product shots are 512 px; shops' are often ~1,000 px),
and ``--profile`` adds the functions that took the most time (cProfile of
one thread running the same images).

    python scripts/bench_local_features.py
    python scripts/bench_local_features.py --long-side 1000 --workers 2 --profile
    python scripts/bench_local_features.py --long-side 1000 --fast
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pinid.images import load_image, working_copy
from pinid.local.features import FeatureConfig, reference_entry

DEFAULT_CATALOGUE = Path("/work/data/bench-full2/catalogue")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def catalogue_images(folder: Path, limit: int) -> list[Path]:
    """The first ``limit`` image files under ``folder``, in name order (one folder per pin)."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return found[:limit]


def prepared(paths: list[Path], long_side: int, config: FeatureConfig) -> list[Image.Image]:
    """Decoded images as a build passes them to ``reference_entry`` (optionally scaled to ``long_side``)."""
    images = []
    for path in paths:
        image = load_image(path)
        if long_side:
            scale = long_side / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.LANCZOS)
        images.append(working_copy(image, config.reference_long_side_px)[0])
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=DEFAULT_CATALOGUE, help="catalogue folder [%(default)s]")
    parser.add_argument("--limit", type=int, default=60, help="images to time [%(default)s]")
    parser.add_argument("--workers", type=int, default=2, help="threads, as a build's --workers [%(default)s]")
    parser.add_argument("--long-side", type=int, default=0,
                        help="scale each image to this long side first; 0 keeps it as it is [%(default)s]")
    parser.add_argument("--repeat", type=int, default=1, help="timed passes; the best is reported [%(default)s]")
    parser.add_argument("--fast", action="store_true", help="FeatureConfig.fast(): fewer, smaller views")
    parser.add_argument("--profile", action="store_true", help="also profile one single-threaded pass")
    args = parser.parse_args()
    config = FeatureConfig.fast() if args.fast else FeatureConfig()
    paths = catalogue_images(args.catalogue, args.limit)
    if not paths:
        raise SystemExit(f"no images under {args.catalogue}")
    images = prepared(paths, args.long_side, config)
    reference_entry(images[0], config=config)  # warm up: OpenCV and the PCA table load once

    def one(image: Image.Image) -> int:
        return len(reference_entry(image, config=config).features)

    best, cpu = float("inf"), float("inf")
    counts: list[int] = []
    for _ in range(max(1, args.repeat)):
        started, cpu_started = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(max(1, args.workers)) as pool:
            counts = list(pool.map(one, images))
        best = min(best, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - cpu_started)
    sizes = np.array([max(image.size) for image in images])
    # CPU seconds per image do not depend on what else runs on the machine; images/s does
    print("| views | images | long side (px) | workers | seconds | images/s | CPU s per image | descriptors per image |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {'fast' if args.fast else 'default'} | {len(images)} | {int(np.median(sizes))} | {args.workers} "
          f"| {best:.2f} | {len(images) / best:.2f} | {cpu / len(images):.3f} | {np.mean(counts):.0f} |")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for image in images:
            reference_entry(image, config=config)
        profiler.disable()
        report = io.StringIO()
        pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(15)
        print(report.getvalue())


if __name__ == "__main__":
    main()
