"""What a change to an index costs, against the size of the index: seconds and bytes written.

Builds a local-features index of N generated pins (``--encoder local``: no
model), then adds one pin, updates one pin and removes one, and for each
change reports seconds and the bytes of files that are new in the new
generation (files hard-linked from the previous generation are not counted:
nothing was written for them). Run at two sizes to see what grows with the
index and what with the change::

    python scripts/bench_change.py --pins 50 200

Pins are random enamel-like shapes (seeded), 256 px, one image each; the
build uses a feature cache so that only the first size extracts every image.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pinid import read_catalogue
from pinid.index import PinIndex
from pinid.local.cache import FeatureCache
from pinid.local.features import FeatureConfig


def draw_pin(seed: int, size: int = 256) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (236, 236, 232))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = (int(v) for v in rng.integers(16, size * 3 // 4, 2))
        x1, y1 = x0 + int(rng.integers(12, size // 3)), y0 + int(rng.integers(12, size // 3))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=colour, outline=(200, 170, 60), width=3)
    return image


def write_pins(root: Path, seeds: range) -> Path:
    for seed in seeds:
        folder = root / f"pin-{seed:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        draw_pin(seed).save(folder / "front.png")
    return root


def inodes(folder: Path) -> dict[int, int]:
    return {os.stat(path).st_ino: os.stat(path).st_size for path in folder.rglob("*") if path.is_file()}


def written(before: dict[int, int], folder: Path) -> int:
    return sum(size for inode, size in inodes(folder).items() if inode not in before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pins", type=int, nargs="+", default=[50, 200], help="index sizes to measure")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        with FeatureCache.open(work / "cache", FeatureConfig()) as cache:
            for pins in args.pins:
                catalogue = write_pins(work / f"catalogue-{pins}", range(pins))
                started = time.perf_counter()
                index = PinIndex.build(read_catalogue(catalogue), work / f"index-{pins}", None,
                                       workers=args.workers, feature_cache=cache)
                build_s = time.perf_counter() - started
                size = sum(inodes(index.path).values())
                extra = write_pins(work / f"extra-{pins}", range(100_000 + pins, 100_001 + pins))
                changed = work / f"changed-{pins}"
                write_pins(changed, range(0, 1))
                (changed / "pin-00000" / "front.png").unlink()
                draw_pin(900_000 + pins).save(changed / "pin-00000" / "front.png")
                steps = [("add 1 pin", lambda: index.add(read_catalogue(extra), workers=args.workers)),
                         ("update 1 pin", lambda: index.update(read_catalogue(changed), workers=args.workers)),
                         ("remove 1 pin", lambda: index.remove(["pin-00001"]))]
                for name, step in steps:
                    before = inodes(index.path)
                    started = time.perf_counter()
                    step()
                    rows.append((pins, name, time.perf_counter() - started, written(before, index.path), size,
                                 build_s))
    print(f"{'pins':>6}  {'change':<13} {'seconds':>8}  {'KB written':>10}  {'index KB':>9}  {'build s':>8}")
    for pins, name, seconds, bytes_written, size, build_s in rows:
        print(f"{pins:>6}  {name:<13} {seconds:8.2f}  {bytes_written / 1024:10.1f}  {size / 1024:9.1f}  "
              f"{build_s:8.1f}")


if __name__ == "__main__":
    main()
