"""What runs on the Ray workers: reading, decoding, encoding and feature extraction, batch by batch.

Every function here takes and returns one Ray Data batch (a dict of NumPy
columns) and does exactly what the one-machine path does for the same file
(``pinid.encoder.cache.prepare``, ``pinid.index.build.reference_image``,
``pinid.dedup.local_pairs.listing_entry``), so that a cluster build and a local
build give the same vectors and features. Nothing here imports Ray: the
functions run as plain code in tests too.

Decoded pixels and feature entries cross the object store as bytes (raw
pixels with their shape; ``np.savez`` without pickle for entries), so rows of
different sizes need no ragged tensor columns.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..encoder.cache import prepare, sha256_or_reason
from ..errors import EncoderMismatchError, ImageError
from ..local.features import FeatureConfig, Features, ReferenceEntry, reference_entry
from ..phash import WINDOWS

Batch = dict[str, np.ndarray]


def _text_column(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=object)


def _bytes_column(values: list[bytes]) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


# -------------------------------------------------------------------- reading
def hash_batch(batch: Batch) -> Batch:
    """sha256 of each file (the content key of every cache), or the reason it cannot be read."""
    digests: list[bytes] = []
    reasons: list[str] = []
    for path in batch["path"]:
        found = sha256_or_reason(Path(str(path)))
        digests.append(found if isinstance(found, bytes) else b"")
        reasons.append("" if isinstance(found, bytes) else found)
    return {"position": np.asarray(batch["position"], dtype=np.int64), "digest": _bytes_column(digests),
            "reason": _text_column(reasons)}


def _pixels(image: Image.Image) -> tuple[bytes, int, int]:
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    return rgb.tobytes(), rgb.shape[0], rgb.shape[1]


def image_of(pixels: bytes, height: int, width: int) -> Image.Image:
    """The decoded RGB image back from the bytes a decode step sent."""
    return Image.fromarray(np.frombuffer(pixels, dtype=np.uint8).reshape(int(height), int(width), 3), "RGB")


@dataclass(frozen=True)
class DecodeForEncoder:
    """Decode each file as ``pinid.encoder.cache.prepare`` does: the encoder's input image and the photo hashes."""

    image_size: int

    def __call__(self, batch: Batch) -> Batch:
        out: dict[str, list[Any]] = {"pixels": [], "height": [], "width": [], "hashes": [], "reason": []}
        for path, digest in zip(batch["path"], batch["digest"]):
            prepared = prepare(Path(str(path)), bytes(digest), self.image_size)
            if isinstance(prepared, str):
                out["pixels"].append(b"")
                out["height"].append(0)
                out["width"].append(0)
                out["hashes"].append(np.zeros(WINDOWS, np.uint64))
                out["reason"].append(prepared)
                continue
            image, hashes = prepared
            pixels, height, width = _pixels(image)
            out["pixels"].append(pixels)
            out["height"].append(height)
            out["width"].append(width)
            out["hashes"].append(np.asarray(hashes, dtype=np.uint64))
            out["reason"].append("")
        return {"digest": batch["digest"], "pixels": _bytes_column(out["pixels"]),
                "height": np.asarray(out["height"], np.int64), "width": np.asarray(out["width"], np.int64),
                "hashes": np.stack(out["hashes"]) if out["hashes"] else np.zeros((0, WINDOWS), np.uint64),
                "reason": _text_column(out["reason"])}


# ------------------------------------------------------------------- encoding
class EncodeWorker:
    """One model per actor: loads the encoder once, then encodes every batch it is given.

    ``load_encoder`` is a picklable callable that returns the encoder (e.g.
    ``functools.partial(Encoder.load, spec, device="cpu", offline=True)``);
    ``expected_identity`` is the driver's encoder identity: a node whose
    weights differ (another file under the same name) stops the job with an
    ``EncoderMismatchError`` instead of mixing vectors of two models.
    """

    def __init__(self, load_encoder: Callable[[], Any], expected_identity: dict[str, Any], threads: int = 1,
                 batch_size: int = 32) -> None:
        import sys

        self.encoder = load_encoder()
        if "torch" in sys.modules:  # a CLIP encoder: as many threads as the actor has CPUs (no-model ones: none)
            sys.modules["torch"].set_num_threads(max(1, threads))
        self.batch_size = batch_size
        found = self.encoder.identity()
        if found != expected_identity:
            raise EncoderMismatchError(
                f"the encoder on Ray worker {os.uname().nodename} is {found.get('model')} with weights "
                f"{str(found.get('weights_sha256'))[:12]}, the driver's is {expected_identity.get('model')} with "
                f"weights {str(expected_identity.get('weights_sha256'))[:12]}: give every node the same weights "
                "(pinid export-model, then --model local-dir:PATH on shared storage)")

    def __call__(self, batch: Batch) -> Batch:
        readable = [row for row, reason in enumerate(batch["reason"]) if not reason]
        reasons = [str(reason) for reason in batch["reason"]]
        dim = int(self.encoder.identity().get("embedding_dim") or 0)
        vectors = np.zeros((len(reasons), dim), np.float32)
        if readable:
            images = [image_of(batch["pixels"][row], batch["height"][row], batch["width"][row]) for row in readable]
            result = self.encoder.encode_images(images, batch_size=self.batch_size, workers=1)
            for position, reason in result.failures:
                reasons[readable[position]] = reason
            if result.ok:
                vectors[[readable[position] for position in result.ok]] = result.vectors
        return {"digest": batch["digest"], "vector": vectors, "hashes": batch["hashes"],
                "reason": _text_column(reasons)}


# ------------------------------------------------------------- local features
@dataclass(frozen=True)
class DecodeForFeatures:
    """Decode each file as local-feature extraction sees it: a catalogue image or a listing photo."""

    config: FeatureConfig
    kind: str  # "reference" (pinid.index.build.reference_image) or "listing" (dedup's listing photos)

    def __call__(self, batch: Batch) -> Batch:
        import hashlib

        from ..images import load_image
        from ..index.build import reference_image

        pixels: list[bytes] = []
        heights: list[int] = []
        widths: list[int] = []
        reasons: list[str] = []
        for path, digest in zip(batch["path"], batch["digest"]):
            try:
                data = Path(str(path)).read_bytes()
                if hashlib.sha256(data).digest() != bytes(digest):
                    raise ImageError(str(path), "file changed while the job was running; run again")
                if self.kind == "reference":
                    image = reference_image(data, self.config)
                else:
                    image = load_image(data, min_side=self.config.query_long_side_px)
                values, height, width = _pixels(image)
                reason = ""
            except OSError as exc:
                values, height, width, reason = b"", 0, 0, f"cannot be read ({exc.strerror or exc})"
            except ImageError as exc:
                values, height, width, reason = b"", 0, 0, exc.reason
            pixels.append(values)
            heights.append(height)
            widths.append(width)
            reasons.append(reason)
        return {"digest": batch["digest"], "pixels": _bytes_column(pixels), "height": np.asarray(heights, np.int64),
                "width": np.asarray(widths, np.int64), "reason": _text_column(reasons)}


class FeatureWorker:
    """Extracts local features (OpenCV SIFT, the shipped PCA): an actor, so the tables load once per worker."""

    def __init__(self, config: FeatureConfig, kind: str, threads: int = 1) -> None:
        import cv2

        cv2.setNumThreads(max(1, threads))
        self.config, self.kind = config, kind

    def __call__(self, batch: Batch) -> Batch:
        entries: list[bytes] = []
        reasons = [str(reason) for reason in batch["reason"]]
        for row, reason in enumerate(reasons):
            if reason:
                entries.append(b"")
                continue
            image = image_of(batch["pixels"][row], batch["height"][row], batch["width"][row])
            if self.kind == "reference":
                entry = reference_entry(image, config=self.config)
            else:
                from ..dedup.local_pairs import listing_entry_of_image

                entry = listing_entry_of_image(image, self.config)
            entries.append(entry_to_bytes(entry))
        return {"digest": batch["digest"], "entry": _bytes_column(entries), "reason": _text_column(reasons)}


def entry_to_bytes(entry: ReferenceEntry) -> bytes:
    """A feature entry as ``np.savez`` bytes (no pickle), to cross the object store."""
    buffer = io.BytesIO()
    features = entry.features
    np.savez(buffer, keypoints=features.keypoints, descriptors=features.descriptors,
             size=np.array([features.width, features.height], np.int64), box=np.array(entry.pin_box, np.float64),
             colour=entry.colour)
    return buffer.getvalue()


def entry_from_bytes(data: bytes) -> ReferenceEntry:
    """The entry back from :func:`entry_to_bytes`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        width, height = (int(v) for v in arrays["size"])
        box = tuple(float(v) for v in arrays["box"])
        features = Features(arrays["keypoints"], arrays["descriptors"], width, height)
        return ReferenceEntry(features, box, arrays["colour"])  # type: ignore[arg-type]


__all__ = ["DecodeForEncoder", "DecodeForFeatures", "EncodeWorker", "FeatureWorker", "entry_from_bytes",
           "entry_to_bytes", "hash_batch", "image_of"]
