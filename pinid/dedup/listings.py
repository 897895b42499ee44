"""Reading marketplace listings: a folder of images, or a CSV/JSONL with ``listing_id,image``.

A listings file is the marketplace's own export, so a malformed one (missing
columns, a listing id twice, an id with control characters) is a
``CatalogueError`` naming the line; a missing or corrupt image is not an
error here: dedup reports it per listing. In a folder, files that cannot be
listings (a name that is not UTF-8, a broken symbolic link, an unreadable
sub-folder) are skipped with a reason when the caller collects them, and are
an error otherwise: never dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..catalogue import find_files
from ..errors import CatalogueError, InputError
from ..tables import TableError, has_control_characters, is_utf8, printable, read_rows


@dataclass(frozen=True)
class Listing:
    """One listing: its id and the path of its photo."""

    listing_id: str
    image: Path


def read_listings(path: str | os.PathLike, skipped: list[tuple[str, str]] | None = None) -> list[Listing]:
    """A folder of images (id = relative path) or a CSV/JSONL with ``listing_id,image``.

    Folder entries that cannot be listings are appended to ``skipped`` as
    ``(path, reason)``; without a ``skipped`` list the first of them is a
    ``CatalogueError``.
    """
    source = Path(path).expanduser()
    if not is_utf8(source.absolute()):
        raise InputError(f"listings {printable(source.absolute())}: the path is not valid UTF-8; rename it")
    if not source.exists():
        raise InputError(f"listings {printable(source)} do not exist")
    if source.is_dir():
        listings = _listings_from_folder(source, skipped)
    elif source.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        listings = _listings_from_rows(source)
    else:
        raise InputError(f"listings {printable(source)} must be a folder, a .csv or a .jsonl file")
    if not listings:
        raise CatalogueError(f"listings {printable(source)} contain no images")
    return listings


def _listings_from_folder(source: Path, skipped: list[tuple[str, str]] | None) -> list[Listing]:
    suffixes = set(Image.registered_extensions())
    problems: list[tuple[str, str]] = []
    try:
        files = find_files(source, problems, wanted=lambda name: Path(name).suffix.lower() in suffixes)
    except OSError as exc:
        raise CatalogueError(f"listings {printable(source)} cannot be read ({exc.strerror or exc})") from None
    listings = []
    for file in files:
        listing_id = file.relative_to(source).as_posix()
        if has_control_characters(listing_id):
            problems.append((printable(file), "listing id (file name) has control characters"))
        else:
            listings.append(Listing(listing_id, file))
    if problems and skipped is None:
        where, why = problems[0]
        raise CatalogueError(f"listings {printable(source)}: {where}: {why} ({len(problems)} such file(s); "
                             "rename or remove them)")
    if skipped is not None:
        skipped.extend(problems)
    return listings


def _listings_from_rows(source: Path) -> list[Listing]:
    try:
        rows = read_rows(source, ("listing_id", "image"))
    except TableError as exc:
        raise CatalogueError(f"listings {exc}") from None
    listings: list[Listing] = []
    seen: set[str] = set()
    for where, row in rows:
        where = printable(where)
        if "listing_id" not in row or "image" not in row:
            raise CatalogueError(f"listings {where}: needs listing_id and image")
        listing_id, image = _cell(row["listing_id"]), _cell(row["image"])
        if not listing_id or not image:
            raise CatalogueError(f"listings {where}: empty listing_id or image")
        if has_control_characters(listing_id):
            raise CatalogueError(f"listings {where}: listing_id {printable(listing_id)} has control characters")
        if listing_id in seen:
            raise CatalogueError(f"listings {where}: listing_id {listing_id!r} appears twice")
        seen.add(listing_id)
        listings.append(Listing(listing_id, Path(image) if Path(image).is_absolute() else source.parent / image))
    return listings


def _cell(value: object) -> str:
    return "" if value is None else str(value).strip()
