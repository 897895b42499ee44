"""Reading and writing the index's SQLite table and FAISS vector file (see ``format`` for the layout)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Sequence

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


def write_database(path: Path, rows: Sequence[tuple[PinRecord, list[tuple[int, Path]]]]) -> None:
    """One row per pin and per image; image ids are the vector rows (and the local store's ids)."""
    connection = sqlite3.connect(path)
    try:
        connection.executescript(_SCHEMA)
        for pin_row, (pin, images) in enumerate(rows):
            connection.execute("INSERT INTO pins VALUES (?, ?, ?, ?)",
                               (pin_row, pin.pin_id, pin.name, dumps(pin.metadata, default=str)))
            connection.executemany("INSERT INTO images VALUES (?, ?, ?, ?)",
                                   [(image_id, pin_row, str(image_path.resolve()), file_sha256(image_path))
                                    for image_id, image_path in images])
        connection.commit()
    finally:
        connection.close()


def read_table(path: Path) -> PinTable:
    """The pin table, checked: every image belongs to a pin, every pin's metadata is a JSON object."""
    where = path.parent
    if not path.is_file():
        raise IndexFormatError(f"index {where} is damaged: {path.name} is missing; rebuild it")
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
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


def write_vectors(path: Path, vectors: np.ndarray) -> None:
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    faiss.write_index(index, str(path))


def read_vectors(path: Path) -> Any:
    import faiss

    if not path.is_file():
        raise IndexFormatError(f"index {path.parent} is damaged: {path.name} is missing; rebuild it")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else str(exc)
        raise IndexFormatError(f"index {path.parent} is damaged: {path.name} cannot be read ({detail}); "
                               "rebuild it") from None
