"""Peak memory and time to index one very large reference image (local features only).

A catalogue may hold a 6000 x 6000 product shot. pinid reduces reference
images to ``FeatureConfig.reference_long_side_px`` before local features;
this script builds a one-pin local index from a generated square image of
``--side`` pixels in a fresh process and prints the peak RSS and the time.
``--pinid DIR`` runs another checkout of pinid (e.g. an older commit in a
git worktree) for a before/after table.

    python scripts/bench_reference_size.py --side 6000
    python scripts/bench_reference_size.py --side 6000 --pinid /tmp/old-checkout
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from pinid import PinIndex, read_catalogue
started = time.perf_counter()
PinIndex.build(read_catalogue(sys.argv[2]), sys.argv[3], None)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=6000, help="side of the square reference image in pixels")
    parser.add_argument("--pinid", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the pinid checkout to measure [default: this one]")
    args = parser.parse_args()
    from PIL import Image, ImageDraw

    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "catalogue" / "big"
        folder.mkdir(parents=True)
        image = Image.new("RGB", (args.side, args.side), (236, 236, 232))
        draw = ImageDraw.Draw(image)
        s = args.side
        draw.ellipse((s * 0.1, s * 0.1, s * 0.9, s * 0.9), fill=(200, 30, 40), outline=(212, 175, 55), width=s // 40)
        draw.rectangle((s * 0.35, s * 0.3, s * 0.65, s * 0.55), fill=(20, 90, 160))
        draw.polygon([(s * 0.5, s * 0.6), (s * 0.3, s * 0.8), (s * 0.7, s * 0.8)], fill=(240, 200, 40))
        image.save(folder / "a.png")
        done = subprocess.run([sys.executable, "-c", _CHILD, str(args.pinid.resolve()), str(folder.parent),
                               str(Path(work) / "index")], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"build failed:\n{done.stderr}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"| pinid | reference side (px) | build seconds | peak RSS (MB) |\n| --- | ---: | ---: | ---: |\n"
          f"| {args.pinid} | {args.side} | {result['seconds']:.1f} | {result['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
