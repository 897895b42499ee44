"""The ``local/`` arrays of an index: every reference image's features, memory-mapped, no pickle.

Layout (``INDEX_DIR/local``): ``descriptors.npy`` (n, 64) uint8 codes,
``keypoints.npy`` (n, 4) float16 x/y/size/angle, ``images.npy`` (images, 3)
int64 (image id, first row, end row), ``geometry.npy`` (images, 6) float32
(width, height, pin box), ``colour.npy`` (images, 48, 48, 4) uint8 Lab
thumbnail and pin mask. Read with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import IndexFormatError
from .features import DESCRIPTOR_DIMS, THUMBNAIL_SIDE, Features, ReferenceEntry

class LocalStore:
    """All reference entries of an index, memory-mapped from ``INDEX_DIR/local``."""

    _NAMES = ("descriptors", "keypoints", "images", "geometry", "colour")

    def __init__(self, descriptors: np.ndarray, keypoints: np.ndarray, images: np.ndarray, geometry: np.ndarray,
                 colour: np.ndarray) -> None:
        self.descriptors = descriptors
        self.keypoints = keypoints
        self.image_ids = np.asarray(images[:, 0], dtype=np.int64)
        self._rows = {int(image_id): (int(start), int(end), position)
                      for position, (image_id, start, end) in enumerate(np.asarray(images))}
        self._geometry = np.asarray(geometry, dtype=np.float32)
        self._colour = colour
        self.row_image = np.repeat(self.image_ids, np.asarray(images[:, 2] - images[:, 1], dtype=np.int64))

    def __contains__(self, image_id: int) -> bool:
        return int(image_id) in self._rows

    def entry(self, image_id: int) -> ReferenceEntry:
        start, end, position = self._rows[int(image_id)]
        width, height, x0, y0, x1, y1 = (float(v) for v in self._geometry[position])
        features = Features(np.asarray(self.keypoints[start:end], dtype=np.float32),
                            np.asarray(self.descriptors[start:end]), int(width), int(height))
        return ReferenceEntry(features, (x0, y0, x1, y1), np.asarray(self._colour[position]))

    def feature_count(self, image_id: int) -> int:
        start, end, _ = self._rows[int(image_id)]
        return end - start

    @classmethod
    def load(cls, folder: Path) -> "LocalStore":
        """Memory-map the arrays in ``folder`` (an index's ``local/``) and check their shapes agree."""
        index_dir = folder.parent
        try:
            arrays = [np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in cls._NAMES]
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"index {index_dir}: local features are missing or damaged ({exc}); "
                                   "rebuild it") from None
        descriptors, keypoints, images, geometry, colour = arrays
        rows = int(images[:, 2].max()) if len(images) else 0
        if (descriptors.ndim != 2 or descriptors.shape[1] != DESCRIPTOR_DIMS
                or keypoints.shape != (len(descriptors), 4)
                or images.ndim != 2 or images.shape[1] != 3 or len(geometry) != len(images)
                or len(colour) != len(images) or rows != len(descriptors)):
            raise IndexFormatError(f"index {index_dir}: local feature arrays disagree in shape; rebuild it")
        return cls(descriptors, keypoints, images, geometry, colour)


def write_local_store(folder: Path, entries: Iterable[tuple[int, ReferenceEntry]]) -> np.ndarray:
    """Write (image_id, entry) pairs as the ``local/`` arrays; returns the descriptors for the vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptors, keypoints, images, geometry, colour = [], [], [], [], []
    row = 0
    for image_id, entry in entries:
        features = entry.features
        descriptors.append(features.descriptors)
        keypoints.append(features.keypoints)
        images.append((image_id, row, row + len(features)))
        geometry.append((features.width, features.height, *entry.pin_box))
        colour.append(entry.colour)
        row += len(features)
    all_descriptors = np.concatenate(descriptors) if descriptors else np.zeros((0, DESCRIPTOR_DIMS), np.uint8)
    np.save(folder / "descriptors.npy", all_descriptors)
    all_keypoints = np.concatenate(keypoints) if keypoints else np.zeros((0, 4), np.float32)
    np.save(folder / "keypoints.npy", all_keypoints.astype(np.float16))
    np.save(folder / "images.npy", np.array(images, dtype=np.int64).reshape(-1, 3))
    np.save(folder / "geometry.npy", np.array(geometry, dtype=np.float32).reshape(-1, 6))
    np.save(folder / "colour.npy", np.array(colour, dtype=np.uint8).reshape(-1, THUMBNAIL_SIDE, THUMBNAIL_SIDE, 4))
    return all_descriptors
