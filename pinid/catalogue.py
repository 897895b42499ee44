"""Reading a reference catalogue into pin records.

Two forms are accepted, because collectors keep folders and marketplaces keep
spreadsheets:

* a folder with one sub-folder per pin (folder name = pin id), holding that
  pin's reference images and an optional ``pin.json`` with ``name`` and any
  other metadata;
* a CSV or JSONL manifest with ``id``, ``name`` and ``image`` (relative to the
  manifest) and any extra columns, kept as metadata. Several rows may share an id.

Images are not opened here: the build decides what is readable and reports
the rest. Problems that make an entry unusable are collected in
``Catalogue.skipped``, not raised, so one bad row never sinks a thousand good
ones: names that are not UTF-8 (SQLite and JSON store text), pin ids with
control characters, folders that cannot be read, broken symbolic links, a
second name for an id already named. Names are cleaned of control characters;
metadata holds only what JSON can write (NaN is read as null).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import CatalogueError, InputError
from .tables import TableError, clean_text, has_control_characters, is_utf8, parse_json, printable, read_rows

PIN_METADATA_FILE = "pin.json"
_REQUIRED_COLUMNS = ("id", "name", "image")
NOT_UTF8 = "name is not valid UTF-8"
BROKEN_LINK = "broken symbolic link"


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
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or row, reason), printable

    @property
    def image_count(self) -> int:
        return sum(len(pin.images) for pin in self.pins)


def read_catalogue(path: str | os.PathLike) -> Catalogue:
    """Read a folder or CSV/JSONL catalogue; raises ``CatalogueError`` if nothing usable is in it."""
    source = Path(path).expanduser()
    if not is_utf8(source.absolute()):
        raise InputError(f"catalogue {printable(source.absolute())}: the path is not valid UTF-8; rename it")
    if not source.exists():
        raise InputError(f"catalogue {printable(source)} does not exist")
    if source.is_dir():
        catalogue = _read_folder(source)
    elif source.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        try:
            rows = read_rows(source, _REQUIRED_COLUMNS)
        except TableError as exc:
            raise CatalogueError(f"catalogue {exc}") from None
        catalogue = _read_rows(source, rows)
    else:
        raise InputError(f"catalogue {printable(source)} must be a folder, a .csv or a .jsonl file")
    if not catalogue.pins:
        reasons = "; ".join(f"{where}: {why}" for where, why in catalogue.skipped[:3])
        raise CatalogueError(f"catalogue {printable(source)} has no pins with images"
                             + (f" ({reasons})" if reasons else ""))
    return catalogue


def find_files(folder: Path, skipped: list[tuple[str, str]], *,
               wanted: Callable[[str], bool] = lambda name: True) -> list[Path]:
    """Regular files under ``folder`` (sorted; hidden names and folder symlinks not followed).

    What cannot be used is added to ``skipped`` with why: names that are not
    UTF-8, broken symbolic links, links to things that are not files,
    sub-folders that cannot be read. Only names passing ``wanted`` are kept or
    reported. Raises ``OSError`` if ``folder`` itself cannot be read.
    """
    files: list[Path] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as scan:
                entries = list(scan)
        except OSError as exc:
            if current == folder:
                raise
            skipped.append((printable(current), f"folder cannot be read ({exc.strerror or exc})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=False):
                    if is_utf8(entry.name):
                        pending.append(path)
                    else:
                        skipped.append((printable(path), NOT_UTF8))
                    continue
                if not wanted(entry.name):
                    continue
                if not is_utf8(entry.name):
                    skipped.append((printable(path), NOT_UTF8))
                elif entry.is_file(follow_symlinks=True):
                    files.append(path)
                elif entry.is_symlink():
                    skipped.append((printable(path), BROKEN_LINK if not path.exists() else
                                    "symbolic link to something that is not a file (not followed)"))
                else:
                    skipped.append((printable(path), "not a regular file"))
            except OSError as exc:
                skipped.append((printable(path), f"cannot be read ({exc.strerror or exc})"))
    return sorted(files)


def _read_folder(root: Path) -> Catalogue:
    pins: list[PinRecord] = []
    skipped: list[tuple[str, str]] = []
    try:
        with os.scandir(root) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as exc:
        raise CatalogueError(f"catalogue {printable(root)} cannot be read ({exc.strerror or exc})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        folder = Path(entry.path)
        if not is_utf8(entry.name):
            skipped.append((printable(folder), NOT_UTF8))
            continue
        if not _is_dir(folder):
            skipped.append((printable(folder), BROKEN_LINK if entry.is_symlink() and not folder.exists() else
                            "file outside a pin folder (put each pin's images in a folder named by its id)"))
            continue
        if has_control_characters(entry.name):
            skipped.append((printable(folder), "pin id (folder name) has control characters"))
            continue
        try:
            images = find_files(folder, skipped, wanted=lambda name: name != PIN_METADATA_FILE)
        except OSError as exc:
            skipped.append((printable(folder), f"pin folder cannot be read ({exc.strerror or exc})"))
            continue
        if not images:
            skipped.append((printable(folder), "pin folder has no image files"))
            continue
        metadata = _read_pin_json(folder / PIN_METADATA_FILE, skipped)
        name = clean_text(metadata.pop("name", None), fallback=entry.name)
        pins.append(PinRecord(entry.name, name, metadata, tuple(images)))
    return Catalogue(root, pins, skipped)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _read_pin_json(path: Path, skipped: list[tuple[str, str]]) -> dict[str, Any]:
    """The pin's metadata, or {} with a skipped entry if pin.json cannot be used."""
    try:
        if not path.is_file():
            return {}
        data = parse_json(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        skipped.append((printable(path), f"unreadable pin.json, metadata ignored ({printable(detail)})"))
        return {}
    if not isinstance(data, dict):
        skipped.append((printable(path), "pin.json is not a JSON object, metadata ignored"))
        return {}
    return data


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _read_rows(manifest: Path, rows: list[tuple[str, dict[str, Any]]]) -> Catalogue:
    """Group manifest rows by id: the first row of an id gives its name and metadata."""
    base = manifest.parent
    order: list[str] = []
    names: dict[str, str] = {}
    named_at: dict[str, str] = {}  # where an id got its name, for conflicts
    metadata: dict[str, dict[str, Any]] = {}
    images: dict[str, list[Path]] = {}
    skipped: list[tuple[str, str]] = []
    for where, row in rows:
        where = printable(where)
        pin_id, image = _cell(row.get("id")), _cell(row.get("image"))
        if not pin_id or not image:
            skipped.append((where, "empty id or image"))
            continue
        if has_control_characters(pin_id):
            skipped.append((where, f"id {printable(pin_id)} has control characters"))
            continue
        name = clean_text(row.get("name"))
        if pin_id not in names:
            order.append(pin_id)
            names[pin_id] = name or pin_id
            if name:
                named_at[pin_id] = where
            metadata[pin_id] = {k: v for k, v in row.items() if k not in _REQUIRED_COLUMNS}
            images[pin_id] = []
        elif name and name != names[pin_id]:
            if pin_id in named_at:
                # Two names for one id: most likely two pins given one id by mistake, so this row's image
                # is not added to the first pin's references (a wrong reference costs more than a lost one).
                skipped.append((where, f"id {pin_id} is already named {names[pin_id]!r} ({named_at[pin_id]}); "
                                       f"row naming it {name!r} skipped"))
                continue
            names[pin_id], named_at[pin_id] = name, where
        image_path = Path(image) if Path(image).is_absolute() else base / image
        if not image_path.is_file():
            reason = "not a regular file" if image_path.exists() else "file not found"
            skipped.append((printable(image_path), f"{reason} ({where})"))
            continue
        images[pin_id].append(image_path)
    pins = []
    for pin_id in order:
        if images[pin_id]:
            pins.append(PinRecord(pin_id, names[pin_id], metadata[pin_id], tuple(images[pin_id])))
        else:
            skipped.append((pin_id, "pin has no existing image files"))
    return Catalogue(manifest, pins, skipped)
