"""Contact sheet of a generated benchmark, for people to judge realism at a glance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

TILE = 300


def _tile(path: Path, label: str = "", polygons: list | None = None):
    """Letterboxed thumbnail, optionally with polygons and a caption drawn on it."""
    from PIL import Image, ImageDraw

    img = Image.open(path).convert("RGB")
    if polygons:
        draw = ImageDraw.Draw(img)
        for poly in polygons:
            draw.polygon([tuple(p) for p in poly], outline=(0, 255, 0), width=max(2, img.width // 250))
    img.thumbnail((TILE, TILE))
    tile = Image.new("RGB", (TILE, TILE), (30, 30, 30))
    tile.paste(img, ((TILE - img.width) // 2, (TILE - img.height) // 2))
    if label:
        ImageDraw.Draw(tile).text((4, TILE - 14), label, fill=(255, 255, 0))
    return tile


def contact_sheet(bench: Path, dest: Path, queries: int = 12, boards: int = 3, listings: int = 1) -> Path:
    """Write a PNG: query photos beside their catalogue shots, boards with polygons, a listing group."""
    from PIL import Image

    bench = Path(bench)
    with open(bench / "queries.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # One query per pin, spread over the splits; a colourway family is shown together.
    seen: set[str] = set()
    by_split: dict[str, list[dict]] = {}
    for r in rows:
        key = r["pin_id"] or r["design"]
        if key not in seen:
            seen.add(key)
            by_split.setdefault(r["split"], []).append(r)
    cw = by_split.get("colourway", [])
    cw.sort(key=lambda r: r["pin_id"])
    picks = cw[: queries // 3] + by_split.get("unknown", [])[: queries // 6]
    picks += by_split.get("single", [])[: queries - len(picks)]
    tiles = []
    for r in picks:
        if r["pin_id"]:
            tiles.append(_tile(bench / "catalogue" / r["pin_id"] / "front.png", r["pin_id"]))
        else:
            tiles.append(Image.new("RGB", (TILE, TILE), (60, 0, 0)))
        tiles.append(_tile(bench / r["image"], r["split"]))
    with open(bench / "boards.jsonl") as f:
        for line in f.readlines()[:boards]:
            b = json.loads(line)
            tiles.append(_tile(bench / b["image"], f"board: {len(b['pins'])} pins", [p["polygon"] for p in b["pins"]]))
    with open(bench / "listings.csv", newline="") as f:
        lrows = list(csv.DictReader(f))
    first = {r["pin_id"] for r in lrows[:1]}
    for r in [r for r in lrows if r["pin_id"] in first][: 6 * listings]:
        tiles.append(_tile(bench / r["image"], r["kind"]))
    cols = 8
    sheet = Image.new("RGB", (cols * TILE, -(-len(tiles) // cols) * TILE), (0, 0, 0))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * TILE, (i // cols) * TILE))
    dest = Path(dest)
    sheet.save(dest)
    return dest
