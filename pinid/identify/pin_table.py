"""The in-memory map from image ids to pins that answers are written from.

Read once from the index's SQLite table (``pinid.index.storage``) so that
search and identification never wait on SQLite. Metadata is parsed at load
time: a damaged row is an ``IndexFormatError`` there, not a traceback later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

import numpy as np


@dataclass(frozen=True)
class PinRow:
    """One pin as the index holds it."""

    pin_id: str
    name: str
    metadata: dict[str, Any]

    @property
    def design(self) -> str:
        """The design a colourway belongs to (catalogue metadata ``design``), else the pin itself."""
        design = self.metadata.get("design")
        return str(design) if design else self.pin_id


@dataclass
class PinTable:
    """Image ids (sorted) with the pin row of each, the pins, and each image's recorded path."""

    image_ids: np.ndarray  # sorted int64
    image_pin_rows: np.ndarray  # pin_row per image id
    pins: dict[int, PinRow] = field(default_factory=dict)  # pin_row -> pin
    image_paths: dict[int, str] = field(default_factory=dict)

    def pin_rows_of(self, image_ids: np.ndarray) -> np.ndarray:
        """The pin row of each image id (all must exist)."""
        return self.image_pin_rows[np.searchsorted(self.image_ids, image_ids)]

    def pin_row_of(self, image_id: int) -> int:
        return int(self.pin_rows_of(np.asarray([image_id], np.int64))[0])

    def image_ids_of(self, pin_ids: Iterable[str]) -> set[int]:
        """The image ids of these pins (ids not in the table are ignored)."""
        wanted = set(pin_ids)
        rows = np.array([row for row, pin in self.pins.items() if pin.pin_id in wanted], np.int64)
        return set(self.image_ids[np.isin(self.image_pin_rows, rows)].tolist()) if len(rows) else set()

    def pin(self, pin_id: str) -> PinRow | None:
        """The pin with this id, or None."""
        row = self._rows_by_id.get(pin_id)
        return None if row is None else self.pins[row]

    def images_of(self, pin_id: str) -> list[str]:
        """Recorded paths of a pin's reference images, by image id."""
        row = self._rows_by_id.get(pin_id)
        if row is None:
            return []
        return [self.image_paths[image_id] for image_id in self._image_ids_by_row.get(row, [])]

    # A server asks these per answer: maps built once per table, not a scan of every pin per call.
    @cached_property
    def _rows_by_id(self) -> dict[str, int]:
        return {pin.pin_id: row for row, pin in self.pins.items()}

    @cached_property
    def _image_ids_by_row(self) -> dict[int, list[int]]:
        grouped: dict[int, list[int]] = {}
        for image_id, row in zip(self.image_ids.tolist(), self.image_pin_rows.tolist()):
            grouped.setdefault(int(row), []).append(int(image_id))
        return grouped
