"""Reading marketplace listings: a folder of images, or a CSV/JSONL with ``listing_id,image``.

A listings file is the marketplace's own export, so a malformed one (missing
columns, a listing id twice) is a ``CatalogueError`` naming the line; a
missing or corrupt image is not an error here: dedup reports it per listing.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import CatalogueError, InputError


@dataclass(frozen=True)
class Listing:
    """One listing: its id and the path of its photo."""

    listing_id: str
    image: Path


def read_listings(path: str | os.PathLike) -> list[Listing]:
    """A folder of images (id = relative path) or a CSV/JSONL with ``listing_id,image``."""
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"listings {source} do not exist")
    if source.is_dir():
        suffixes = set(Image.registered_extensions())
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                       and not any(part.startswith(".") for part in p.relative_to(source).parts))
        listings = [Listing(p.relative_to(source).as_posix(), p) for p in files]
    elif source.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        listings = _listings_from_rows(source)
    else:
        raise InputError(f"listings {source} must be a folder, a .csv or a .jsonl file")
    if not listings:
        raise CatalogueError(f"listings {source} contain no images")
    return listings


def _listings_from_rows(source: Path) -> list[Listing]:
    try:
        if source.suffix.lower() == ".csv":
            with open(source, newline="", encoding="utf-8-sig") as handle:
                rows = [(f"line {n + 2}", row) for n, row in enumerate(csv.DictReader(handle))]
        else:
            lines = source.read_text(encoding="utf-8").splitlines()
            rows = [(f"line {n + 1}", json.loads(line)) for n, line in enumerate(lines) if line.strip()]
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise CatalogueError(f"{source}: cannot be read ({exc})") from None
    listings: list[Listing] = []
    seen: set[str] = set()
    for where, row in rows:
        if not isinstance(row, dict) or "listing_id" not in row or "image" not in row:
            raise CatalogueError(f"{source} {where}: needs listing_id and image")
        listing_id, image = str(row["listing_id"] or "").strip(), str(row["image"] or "").strip()
        if not listing_id or not image:
            raise CatalogueError(f"{source} {where}: empty listing_id or image")
        if listing_id in seen:
            raise CatalogueError(f"{source} {where}: listing_id {listing_id!r} appears twice")
        seen.add(listing_id)
        listings.append(Listing(listing_id, Path(image) if Path(image).is_absolute() else source.parent / image))
    return listings
