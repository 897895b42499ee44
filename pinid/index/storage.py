"""Reading and writing the index's SQLite table and FAISS vector file (see ``format`` for the layout)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..catalogue import PinRecord
from ..encoder.cache import file_sha256
from ..errors import IndexFormatError
from ..identify.pin_table import PinRow, PinTable
from ..tables import dumps

_SCHEMA = """
CREATE TABLE pins (
    pin_row  INTEGER PRIMARY KEY,
    pin_id   TEXT NOT NULL UNIQUE,
    name     TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE images (
    image_id INTEGER PRIMARY KEY,
    pin_row  INTEGER NOT NULL REFERENCES pins(pin_row) ON DELETE CASCADE,
    path     TEXT NOT NULL,
    sha256   TEXT NOT NULL
);
CREATE INDEX images_by_pin ON images(pin_row);
"""


def write_database(path: Path, rows: Sequence[tuple[PinRecord, list[tuple[int, Path]]]],
                   known_digests: Mapping[str, bytes | str] | None = None) -> None:
    """One row per pin and per image; image ids are the vector rows (and the local store's ids).

    ``known_digests``: sha256 digests by ``str(path)`` already computed (a Ray build's), not read again.
    """

    def checksum(image_path: Path) -> str:
        known = None if known_digests is None else known_digests.get(str(image_path))
        return known.hex() if isinstance(known, bytes) else file_sha256(image_path)

    connection = sqlite3.connect(path)
    try:
        connection.executescript(_SCHEMA)
        for pin_row, (pin, images) in enumerate(rows):
            connection.execute("INSERT INTO pins VALUES (?, ?, ?, ?)",
                               (pin_row, pin.pin_id, pin.name, dumps(pin.metadata, default=str)))
            connection.executemany("INSERT INTO images VALUES (?, ?, ?, ?)",
                                   [(image_id, pin_row, str(image_path.resolve()), checksum(image_path))
                                    for image_id, image_path in images])
        connection.commit()
    finally:
        connection.close()


def read_table(path: Path, where: Path | None = None) -> PinTable:
    """The pin table, checked: every image belongs to a pin, every pin's metadata is a JSON object.

    The file is read whole through ``path`` and queried in memory: SQLite
    would otherwise open it again by name (resolving symbolic links), which
    could reach another generation of the index than the one ``path`` leads to.
    ``where`` names the index in messages (default: the file's folder).
    """
    where = where or path.parent
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"index {where} is damaged: {path.name} is missing; rebuild it") from None
    except OSError as exc:
        raise IndexFormatError(f"index {where}: {path.name} cannot be read ({exc.strerror or exc})") from None
    try:
        connection = _in_memory(content, path)
        try:
            pin_rows = connection.execute("SELECT pin_row, pin_id, name, metadata FROM pins").fetchall()
            images = connection.execute("SELECT image_id, pin_row, path FROM images ORDER BY image_id").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise IndexFormatError(f"index {where} is damaged: {path.name} cannot be read ({exc}); "
                               "rebuild it") from None
    pins: dict[int, PinRow] = {}
    for pin_row, pin_id, name, metadata in pin_rows:
        try:
            parsed: Any = json.loads(metadata)
        except (TypeError, ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict) or not isinstance(pin_id, str) or not isinstance(name, str):
            raise IndexFormatError(f"index {where} is damaged: pin row {pin_row} in {path.name} has unreadable "
                                   "metadata; rebuild it")
        pins[int(pin_row)] = PinRow(pin_id, name, parsed)
    orphans = [row[0] for row in images if row[1] not in pins]
    if orphans:
        raise IndexFormatError(f"index {where} is damaged: image {orphans[0]} in {path.name} belongs to no pin "
                               f"({len(orphans)} such image(s)); rebuild it")
    image_ids = np.array([row[0] for row in images], dtype=np.int64)
    image_pin_rows = np.array([row[1] for row in images], dtype=np.int64)
    return PinTable(image_ids, image_pin_rows, pins, {row[0]: row[2] for row in images})


def _in_memory(content: bytes, path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    if hasattr(connection, "deserialize"):  # Python 3.11+
        connection.deserialize(content)
        return connection
    connection.close()  # Python 3.10: open the file by its absolute name (not resolved)
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)


@dataclass(frozen=True)
class TableChange:
    """What one change does to the SQLite table: pins dropped, pins written (new or replaced), images added/dropped."""

    drop_pins: Sequence[str] = ()
    write_pins: Sequence[PinRecord] = ()
    drop_images: Sequence[int] = ()
    add_images: Sequence[tuple[str, int, Path, str]] = ()  # (pin id, image id, path, sha256)
    move_images: Sequence[tuple[int, Path]] = ()  # (image id, new path): same content, found elsewhere now


def apply_table_change(path: Path, change: TableChange) -> None:
    """Apply ``change`` to the SQLite file at ``path`` (a copy in a new generation), in one transaction."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA foreign_keys = ON")
        with connection:
            connection.executemany("DELETE FROM images WHERE image_id = ?", [(int(i),) for i in change.drop_images])
            connection.executemany("DELETE FROM pins WHERE pin_id = ?", [(p,) for p in change.drop_pins])
            for pin in change.write_pins:
                metadata = dumps(pin.metadata, default=str)
                updated = connection.execute("UPDATE pins SET name = ?, metadata = ? WHERE pin_id = ?",
                                             (pin.name, metadata, pin.pin_id)).rowcount
                if not updated:
                    connection.execute("INSERT INTO pins (pin_id, name, metadata) VALUES (?, ?, ?)",
                                       (pin.pin_id, pin.name, metadata))
            rows = dict(connection.execute("SELECT pin_id, pin_row FROM pins").fetchall())
            connection.executemany("INSERT INTO images VALUES (?, ?, ?, ?)",
                                   [(int(image_id), rows[pin_id], str(image_path.resolve()), digest)
                                    for pin_id, image_id, image_path, digest in change.add_images])
            connection.executemany("UPDATE images SET path = ? WHERE image_id = ?",
                                   [(str(image_path.resolve()), int(image_id))
                                    for image_id, image_path in change.move_images])
            connection.execute("DELETE FROM pins WHERE pin_row NOT IN (SELECT DISTINCT pin_row FROM images)")
    finally:
        connection.close()


def read_digests(path: Path) -> dict[int, tuple[str, str]]:
    """image id -> (pin id, sha256 of the image's content) for every image in the table at ``path``."""
    connection = _in_memory(path.read_bytes(), path)
    try:
        rows = connection.execute("SELECT image_id, pin_id, sha256 FROM images JOIN pins USING (pin_row)").fetchall()
    finally:
        connection.close()
    return {int(image_id): (pin_id, digest) for image_id, pin_id, digest in rows}


def write_vectors(path: Path, index: Any) -> None:
    import faiss

    faiss.write_index(index, str(path))


def read_vectors(path: Path, where: Path | None = None) -> Any:
    import faiss

    where = where or path.parent
    if not path.is_file():
        raise IndexFormatError(f"index {where} is damaged: {path.name} is missing; rebuild it")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else str(exc)
        raise IndexFormatError(f"index {where} is damaged: {path.name} cannot be read ({detail}); "
                               "rebuild it") from None
