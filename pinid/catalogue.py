"""Reading a reference catalogue into pin records.

Two forms are accepted, because collectors keep folders and marketplaces keep
spreadsheets:

* a folder with one sub-folder per pin (folder name = pin id), holding that
  pin's reference images and an optional ``pin.json`` with ``name`` and any
  other metadata;
* a CSV or JSONL manifest with ``id``, ``name`` and ``image`` (relative to the
  manifest) and any extra columns, kept as metadata. Several rows may share an id.

Images are not opened here: the build decides what is readable and reports
the rest. Problems that make an entry unusable are collected, not raised, so
one bad row never sinks a thousand good ones.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CatalogueError, InputError

PIN_METADATA_FILE = "pin.json"
_REQUIRED_COLUMNS = ("id", "name", "image")


@dataclass(frozen=True)
class PinRecord:
    """One catalogue pin: its id, display name, free metadata and reference images."""

    pin_id: str
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    images: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    """The pins of a catalogue plus every entry that had to be skipped, with why."""

    source: Path
    pins: list[PinRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or row, reason)

    @property
    def image_count(self) -> int:
        return sum(len(pin.images) for pin in self.pins)


def read_catalogue(path: str | os.PathLike) -> Catalogue:
    """Read a folder or CSV/JSONL catalogue; raises ``CatalogueError`` if nothing usable is in it."""
    source = Path(path).expanduser()
    if not source.exists():
        raise InputError(f"catalogue {source} does not exist")
    if source.is_dir():
        catalogue = _read_folder(source)
    elif source.suffix.lower() == ".csv":
        catalogue = _read_rows(source, _csv_rows(source))
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        catalogue = _read_rows(source, _jsonl_rows(source))
    else:
        raise InputError(f"catalogue {source} must be a folder, a .csv or a .jsonl file")
    if not catalogue.pins:
        reasons = "; ".join(f"{where}: {why}" for where, why in catalogue.skipped[:3])
        raise CatalogueError(f"catalogue {source} has no pins with images" + (f" ({reasons})" if reasons else ""))
    return catalogue


def _read_folder(root: Path) -> Catalogue:
    pins: list[PinRecord] = []
    skipped: list[tuple[str, str]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            skipped.append((str(entry), "file outside a pin folder (put each pin's images in a folder named by its id)"))
            continue
        metadata = _read_pin_json(entry / PIN_METADATA_FILE, skipped)
        images = tuple(sorted(p for p in entry.rglob("*") if p.is_file() and not _is_hidden(p, entry)
                              and p.name != PIN_METADATA_FILE))
        if not images:
            skipped.append((str(entry), "pin folder has no image files"))
            continue
        name = str(metadata.pop("name", entry.name))
        pins.append(PinRecord(entry.name, name, metadata, images))
    return Catalogue(root, pins, skipped)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _read_pin_json(path: Path, skipped: list[tuple[str, str]]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        skipped.append((str(path), f"unreadable pin.json, metadata ignored ({exc})"))
        return {}
    if not isinstance(data, dict):
        skipped.append((str(path), "pin.json is not a JSON object, metadata ignored"))
        return {}
    return data


def _csv_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            _check_columns(path, reader.fieldnames or [])
            return [(f"{path.name} line {reader.line_num}", dict(row)) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CatalogueError(f"{path}: not a readable CSV file ({exc})") from None


def _jsonl_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{path}: not a UTF-8 text file ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CatalogueError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise CatalogueError(f"{path} line {number}: expected a JSON object")
        rows.append((f"{path.name} line {number}", row))
    if rows:
        _check_columns(path, set().union(*(row.keys() for _, row in rows)))
    return rows


def _check_columns(path: Path, columns: Any) -> None:
    missing = [c for c in _REQUIRED_COLUMNS if c not in set(columns)]
    if missing:
        raise CatalogueError(f"{path}: missing column(s) {', '.join(missing)} "
                             f"(a manifest needs {', '.join(_REQUIRED_COLUMNS)})")


def _read_rows(manifest: Path, rows: list[tuple[str, dict[str, Any]]]) -> Catalogue:
    base = manifest.parent
    order: list[str] = []
    names: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    images: dict[str, list[Path]] = {}
    skipped: list[tuple[str, str]] = []
    for where, row in rows:
        pin_id = str(row.get("id") or "").strip()
        image = str(row.get("image") or "").strip()
        if not pin_id or not image:
            skipped.append((where, "empty id or image"))
            continue
        if pin_id not in names:
            order.append(pin_id)
            names[pin_id] = str(row.get("name") or pin_id)
            metadata[pin_id] = {k: v for k, v in row.items() if k not in _REQUIRED_COLUMNS and k is not None}
            images[pin_id] = []
        image_path = Path(image) if Path(image).is_absolute() else base / image
        if not image_path.is_file():
            skipped.append((str(image_path), f"file not found ({where})"))
            continue
        images[pin_id].append(image_path)
    pins = []
    for pin_id in order:
        if images[pin_id]:
            pins.append(PinRecord(pin_id, names[pin_id], metadata[pin_id], tuple(images[pin_id])))
        else:
            skipped.append((pin_id, "pin has no existing image files"))
    return Catalogue(manifest, pins, skipped)
