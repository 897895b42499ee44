"""Speed of the core path: encoder throughput, search latency, identify latency.

Usage: python scripts/bench_core.py [--model ViT-B-32-256] [--images 128] [--queries 300] [--sizes 10000,100000]

Speed does not depend on the weights, so by default the script writes the
architecture with *random* weights to a temporary local-dir checkpoint and
loads it through the normal path (pass --weights local-dir:PATH to use real
ones). It prints one Markdown table. Nothing here is a test.

Rows:
* forward, batch B       bare model on ready tensors (images/s)
* pipeline, batch B      JPEG files on disk -> decode -> preprocess -> model (images/s)
* search N               one query against N random unit vectors, exact (p50/p99 ms)
* identify, 10k pins     one JPEG photo -> pins by CLIP alone (`identify --no-verify`: encode, then
                         search the first of --sizes), model already loaded (p50/p99 ms)

The search rows use the index's own search (pinid.index.search) over an
in-memory table of random pins, so that 100k pins need no 100k-image build.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pinid.encoder import Encoder, save_local_dir
from pinid.identify.pin_table import PinRow, PinTable
from pinid.index.search import ExactSearcher, search_pins


def make_photos(folder: Path, count: int, size: tuple[int, int] = (1024, 768)) -> list[Path]:
    """Phone-sized JPEGs with real structure (JPEG decoding cost depends on content)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        ground = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        image = Image.fromarray(ground).resize(size, Image.BILINEAR)
        draw = ImageDraw.Draw(image)
        for _ in range(30):
            x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
            r = int(rng.integers(10, 120))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        path = folder / f"photo{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def timed(fn, repeats: int) -> np.ndarray:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return np.array(times)


class SyntheticPins:
    """``count`` pins with one random unit vector each, searched exactly as ``PinIndex.search`` does."""

    def __init__(self, count: int, dim: int) -> None:
        import faiss

        rng = np.random.default_rng(1)
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        ids = np.arange(count, dtype=np.int64)
        flat.add_with_ids(vectors, ids)
        self.searcher = ExactSearcher(flat)
        self.table = PinTable(ids, ids.copy(), {i: PinRow(f"pin-{i}", f"Pin {i}", {}) for i in range(count)},
                              {i: f"ref{i}.png" for i in range(count)})

    def search(self, vectors: np.ndarray, k: int = 5) -> list:
        return search_pins(self.searcher, self.table, vectors, k)


def pin_counts(text: str) -> list[int]:
    """``--sizes``: comma-separated pin counts, each at least 1."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of pin counts >= 1")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32-256", help="architecture for random weights")
    parser.add_argument("--weights", default=None, help="use these weights instead (e.g. local-dir:PATH)")
    parser.add_argument("--images", type=int, default=128, help="JPEG files for throughput rows")
    parser.add_argument("--queries", type=int, default=300, help="queries per latency row")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per row (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sizes", type=pin_counts, default=pin_counts("10000,100000"),
                        help="pins in the search rows, comma-separated; the identify row uses the first")
    args = parser.parse_args()
    sizes = args.sizes
    if min(args.images, args.queries, args.repeats) < 1:
        parser.error("--images, --queries and --repeats must be at least 1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="pinid-bench-") as tmp:
        tmp_path = Path(tmp)
        if args.weights:
            encoder = Encoder.load(args.weights, None, device="cpu")
            weights_note = args.weights
        else:
            folder = save_local_dir(tmp_path / "model", args.model, random_weights=True)
            encoder = Encoder.load(f"local-dir:{folder}", device="cpu")
            weights_note = f"{args.model}, random weights"
        photos = make_photos(tmp_path, args.images)
        ready = torch.stack([encoder.preprocess(p) for p in photos])

        for batch in (1, 32):
            for _ in range(3):  # oneDNN prepares kernels per input shape: warm up each batch size
                encoder.encode_tensors(ready[:batch])

            def forward() -> None:
                for start in range(0, len(ready), batch):
                    encoder.encode_tensors(ready[start:start + batch])

            # alternate the two measurements and take medians: other work on a 2-core box is noise
            forward_s, pipeline_s = [], []
            for _ in range(args.repeats):
                forward_s.append(timed(forward, 1)[0])
                pipeline_s.append(timed(lambda: encoder.encode_images(photos, batch_size=batch), 1)[0])
            forward_rate = len(ready) / float(np.median(forward_s))
            pipeline_rate = len(photos) / float(np.median(pipeline_s))
            rows.append((f"forward, batch {batch}", f"{forward_rate:.1f} images/s",
                         f"ready tensors; median of {args.repeats}"))
            rows.append((f"pipeline, batch {batch}", f"{pipeline_rate:.1f} images/s",
                         f"{pipeline_rate / forward_rate:.2f}x forward; {args.images} JPEGs 1024x768 q90"))

        dim = encoder.embedding_dim
        for count in sizes:
            pins = SyntheticPins(count, dim)
            queries = np.random.default_rng(2).standard_normal((args.queries, dim)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            times = []
            for query in queries:
                started = time.perf_counter()
                pins.search(query[None], k=5)
                times.append(time.perf_counter() - started)
            times_ms = np.array(times) * 1e3
            rows.append((f"search {count:,} x {dim}", f"p50 {np.percentile(times_ms, 50):.2f} ms",
                         f"p99 {np.percentile(times_ms, 99):.2f} ms; exact, top-5 pins"))

        pins = SyntheticPins(sizes[0], dim)
        photo = photos[0]

        def identify() -> None:  # what `pinid identify --no-verify` does once the model is loaded
            pins.search(encoder.encode_images([photo], batch_size=1).vectors, k=5)

        identify()  # warm-up
        times_ms = timed(identify, min(args.queries, 100)) * 1e3
        rows.append((f"identify, {sizes[0]:,} pins", f"p50 {np.percentile(times_ms, 50):.1f} ms",
                     f"p99 {np.percentile(times_ms, 99):.1f} ms; one 1024x768 JPEG, model loaded, CLIP only"))

    print(f"pinid core benchmark — {weights_note}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}\n")
    print("| what | result | notes |\n| --- | --- | --- |")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()
