"""Plan and write a whole benchmark: catalogue, queries, boards, listings, ground truth.

Planning is cheap and happens up front from the seed; every item (a pin with
its queries, an unknown design, a board, a listing group) then gets its own
random stream derived from ``(seed, kind, index)``, so the output is the same
byte for byte whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .artwork import Artwork, list_artworks, render_layers
from .enamel import METAL_WEIGHTS, METALS, Material, PinStyle, build_material, chroma_fraction
from .scenes import board_photo, catalogue_image, query_photo, reupload, seller_photo

GENERATOR_VERSION = "1.1"
KINDS = {"pin": 1, "unknown": 2, "board": 3, "listing": 4, "plan": 5}
COLOURWAY_NAMES = ["Midnight", "Sunset", "Mint", "Glow", "Noir", "Pastel", "Ocean", "Berry", "Retro", "Neon"]


@dataclass(frozen=True)
class SizeSpec:
    """How much to generate; ``colourway_share`` is the share of designs with variants."""

    designs: int
    colourway_share: float
    queries_per_pin: int
    unknown_designs: int
    unknown_queries: int
    boards: int
    listings: int


SIZES = {
    "tiny": SizeSpec(6, 0.34, 1, 2, 1, 2, 2),
    "small": SizeSpec(40, 0.18, 3, 8, 2, 8, 8),
    "full": SizeSpec(1800, 0.18, 5, 200, 5, 300, 300),
}


@dataclass(frozen=True)
class PinSpec:
    """One catalogue pin: which artwork, how it is made, what it is called."""

    pin_id: str
    design: str
    art: Artwork
    style: PinStyle
    colourway: str | None
    variant: int  # 0 for the original of a design


@dataclass(frozen=True)
class Plan:
    """Everything decided before any pixel is drawn."""

    seed: int
    size: SizeSpec
    pins: tuple[PinSpec, ...]
    unknown: tuple[Artwork, ...]


def item_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """Independent, order-free random stream for one item."""
    return np.random.default_rng([seed, KINDS[kind], index])


def opaque_id(prefix: str, *parts: object) -> str:
    """Stable id that does not reveal the answer (file names must not leak pin ids)."""
    return prefix + hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:12]


def design_id(art: Artwork) -> str:
    return "om-" + art.hexcode.lower()


def make_plan(seed: int, size: SizeSpec) -> Plan:
    """Choose designs, unknowns, plating and colourway families from the seed."""
    arts = list_artworks()
    need = size.designs + size.unknown_designs
    if need > len(arts):
        raise ValueError(f"size needs {need} designs but OpenMoji has {len(arts)}")
    rng = item_rng(seed, "plan", 0)
    order = rng.permutation(len(arts))[:need]
    chosen = [arts[i] for i in order[: size.designs]]
    unknown = tuple(arts[i] for i in order[size.designs :])
    families = set(rng.permutation(size.designs)[: round(size.colourway_share * size.designs)].tolist())
    pins: list[PinSpec] = []
    for i, art in enumerate(chosen):
        metal = str(rng.choice(list(METALS), p=METAL_WEIGHTS))
        base = PinStyle(metal=metal, soft_enamel=bool(rng.random() < 0.6))
        did = design_id(art)
        if i not in families:
            pins.append(PinSpec(did, did, art, base, None, 0))
            continue
        pins.append(PinSpec(did, did, art, base, "Classic", 0))
        names = rng.permutation(COLOURWAY_NAMES)
        shifts = rng.permutation([90.0, 150.0, 210.0, 270.0])
        for k in range(1, int(rng.integers(2, 4))):
            style = replace(base, hue_shift=float(shifts[k - 1]), hue_mirror=bool(rng.random() < 0.4),
                            metal=str(rng.choice(list(METALS))) if rng.random() < 0.5 else metal)
            pins.append(PinSpec(f"{did}-cw{k}", did, art, style, str(names[k - 1]), k))
    return Plan(seed, size, tuple(pins), unknown)


def material_for(pin: PinSpec, tex: int = 512) -> Material:
    """Render and build one pin; low-colour designs get tinted whites in their variants."""
    layers = render_layers(pin.art, tex)
    style = pin.style
    if pin.variant and chroma_fraction(layers) < 0.3:
        rng = np.random.default_rng([pin.variant, int(hashlib.sha1(pin.pin_id.encode()).hexdigest()[:8], 16)])
        tint = rng.uniform(0.2, 0.95, 3)
        style = replace(style, neutral_tint=tuple(float(t) for t in tint))
    return build_material(layers, style)


def base_spec(art: Artwork, rng: np.random.Generator) -> PinSpec:
    """A pin made from an artwork that is not (or not necessarily) in the catalogue."""
    style = PinStyle(metal=str(rng.choice(list(METALS), p=METAL_WEIGHTS)), soft_enamel=bool(rng.random() < 0.6))
    return PinSpec(design_id(art), design_id(art), art, style, None, 0)


# ----------------------------------------------------------------------------- items
# Each item function writes its files under ``out`` and returns ground-truth rows
# as (table, row) pairs; the parent process writes the tables in plan order.

Rows = list[tuple[str, dict]]


def _write(out: Path, rel: str, data: bytes) -> str:
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return rel


def _neighbours(plan: Plan, rng: np.random.Generator) -> list[Material]:
    """Other catalogue pins lying next to the one being photographed."""
    if rng.random() > 0.3 or len(plan.pins) < 2:
        return []
    picks = rng.choice(len(plan.pins), size=int(rng.integers(1, 3)), replace=False)
    return [material_for(plan.pins[int(i)], 256) for i in picks]


def pin_item(plan: Plan, out: Path, index: int) -> Rows:
    """Catalogue entry plus the collector photos of one pin."""
    pin = plan.pins[index]
    rng = item_rng(plan.seed, "pin", index)
    mat = material_for(pin)
    folder = f"catalogue/{pin.pin_id}"
    _write(out, f"{folder}/front.png", catalogue_image(mat, rng))
    meta = {"name": pin.art.name + (f" ({pin.colourway})" if pin.variant else ""), "design": pin.design,
            "colourway": pin.colourway, "metal": pin.style.metal,
            "enamel": "soft" if pin.style.soft_enamel else "hard", "source": f"OpenMoji {pin.art.hexcode}"}
    _write(out, f"{folder}/pin.json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    split = "colourway" if pin.colourway else "single"
    rows: Rows = []
    for k in range(plan.size.queries_per_pin):
        qid = opaque_id("q", plan.seed, pin.pin_id, k)
        data, poly = query_photo(mat, rng, _neighbours(plan, rng))
        rel = _write(out, f"queries/{qid}.jpg", data)
        rows.append(("queries", {"query_id": qid, "image": rel, "pin_id": pin.pin_id, "design": pin.design,
                                 "split": split}))
        rows.append(("query_polygons", {"query_id": qid, "polygon": poly}))
    return rows


def unknown_item(plan: Plan, out: Path, index: int) -> Rows:
    """Photos of a design that is not in the catalogue."""
    rng = item_rng(plan.seed, "unknown", index)
    spec = base_spec(plan.unknown[index], rng)
    mat = material_for(spec)
    rows: Rows = []
    for k in range(plan.size.unknown_queries):
        qid = opaque_id("q", plan.seed, "unknown", spec.design, k)
        data, poly = query_photo(mat, rng, _neighbours(plan, rng))
        rel = _write(out, f"queries/{qid}.jpg", data)
        rows.append(("queries", {"query_id": qid, "image": rel, "pin_id": "", "design": spec.design,
                                 "split": "unknown"}))
        rows.append(("query_polygons", {"query_id": qid, "polygon": poly}))
    return rows


def board_item(plan: Plan, out: Path, index: int) -> Rows:
    """2-6 distinct catalogue pins on one board or lanyard, with their polygons."""
    rng = item_rng(plan.seed, "board", index)
    n = min(int(rng.integers(2, 7)), len(plan.pins))
    picks = [plan.pins[int(i)] for i in rng.choice(len(plan.pins), size=n, replace=False)]
    data, polys = board_photo([material_for(p, 384) for p in picks], rng)
    rel = _write(out, f"boards/{opaque_id('b', plan.seed, index)}.jpg", data)
    pins = [{"pin_id": p.pin_id, "polygon": poly} for p, poly in zip(picks, polys) if poly is not None]
    return [("boards", {"image": rel, "pins": pins})]


def listing_item(plan: Plan, out: Path, index: int) -> Rows:
    """One pin as several sellers photograph it, plus re-uploads of one photo."""
    rng = item_rng(plan.seed, "listing", index)
    pin = plan.pins[int(rng.integers(len(plan.pins)))]
    mat = material_for(pin)
    rows: Rows = []

    def add(data: bytes, group: str, kind: str) -> None:
        lid = opaque_id("l", plan.seed, index, len(rows))
        rel = _write(out, f"listings/{lid}.jpg", data)
        rows.append(("listings", {"listing_id": lid, "image": rel, "pin_id": pin.pin_id,
                                  "photo_group": group, "kind": kind}))

    original = seller_photo(mat, rng)
    group = opaque_id("g", plan.seed, index, 0)
    add(original, group, "original")
    for _ in range(int(rng.integers(1, 4))):
        add(reupload(original, rng), group, "reupload")
    for k in range(int(rng.integers(1, 4))):
        photo = seller_photo(mat, rng) if rng.random() < 0.5 else query_photo(mat, rng)[0]
        add(photo, opaque_id("g", plan.seed, index, k + 1), "other_seller")
    return rows


ITEMS: dict[str, Callable[[Plan, Path, int], Rows]] = {
    "pin": pin_item, "unknown": unknown_item, "board": board_item, "listing": listing_item}


def tasks(plan: Plan) -> list[tuple[str, int]]:
    """All items in a fixed order; the order of rows in the ground truth follows it."""
    s = plan.size
    return ([("pin", i) for i in range(len(plan.pins))] + [("unknown", i) for i in range(len(plan.unknown))]
            + [("board", i) for i in range(s.boards)] + [("listing", i) for i in range(s.listings)])
