"""The index directory layout and its typed manifest, written down once.

Layout::

    INDEX_DIR/
      manifest.json           the Manifest below: format marker and version, pinid version, encoder identity
                              (or null), counts, build time, local-feature settings, confidence calibration
      vectors.faiss           FAISS IndexIDMap2 over an exact inner-product index; ids = image ids (CLIP only)
      catalogue.sqlite        pins (pin_row, pin_id, name, metadata JSON), images (image_id -> pin_row, path, sha256)
      local/NNNNNN/           reference keypoints, descriptors, pin boxes, colour thumbnails, one segment
                              per build or change that added images (pinid.local.store), and
                              vocabulary.faiss: the segment's live descriptors by store row, one shard of
                              the candidate vote's vocabulary (pinid.local.vocabulary)

Every change (``PinIndex.add``, ``remove``, ``update``, a new calibration)
makes a whole new *generation*: a fresh sibling directory that hard-links the
files it does not change, swapped in for the old one in one atomic rename.
Files are never changed in place, so a reader that opens every file through
one directory handle (``PinIndex.load``) sees one generation, never a mix.

An index built with ``encoder=None`` (``pinid build-index --encoder local``)
has no ``vectors.faiss`` and needs no model weights at all. A directory is an
index only if its manifest carries the format marker and it holds nothing
but these entries: anything else is never replaced or deleted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..encoder.weights import EncoderSpec
from ..errors import EncoderMismatchError, IndexFormatError
from ..identify.recogniser import LocalConfig
from ..local.store import Segment
from ..tables import parse_json

if TYPE_CHECKING:
    from ..encoder.clip import Encoder

FORMAT_NAME = "pinid-index"
FORMAT_VERSION = 4  # 4: colour thumbnails carry the pin's filled silhouette (pinid.local.glance)
READABLE_VERSIONS = (3, 4)  # a version-3 index reads as it is: its glance works from the strict pin mask
MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.faiss"
DATABASE_FILE = "catalogue.sqlite"
LOCAL_DIR = "local"
VOCABULARY_FILE = "local_vocabulary.faiss"  # format 2's single vocabulary: allowed in a folder a build replaces
MAX_CHANGES = 20  # changes remembered in the manifest (``pinid info`` shows them)
_SEGMENT_NAME = re.compile(r"[0-9]{6}")
#: Everything an index directory may hold (SQLite may leave a journal beside its file).
INDEX_ENTRIES = frozenset({MANIFEST_FILE, VECTORS_FILE, DATABASE_FILE, LOCAL_DIR, VOCABULARY_FILE,
                           f"{DATABASE_FILE}-journal", f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm"})


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says, checked field by field when read."""

    format_version: int
    pinid_version: str
    created_at: str
    encoder: dict[str, Any] | None  # Encoder.identity(), or None for a local-features-only index
    pins: int
    images: int
    vectors: dict[str, Any] | None
    local_features: dict[str, Any]
    calibration: dict[str, Any]
    catalogue_source: str
    next_image_id: int
    local_config: dict[str, Any] = field(default_factory=dict)  # LocalConfig.to_dict(); {} = the defaults
    generation: int = 1  # 1 for a fresh build, one more per change
    changes: list[dict[str, Any]] = field(default_factory=list)  # the last MAX_CHANGES changes, oldest first

    @property
    def descriptors(self) -> int:
        """Rows in the vocabulary's shards: those of removed images count until their segment goes."""
        return int(self.local_features["descriptors"])

    @property
    def segments(self) -> list[Segment]:
        return [Segment(str(item["name"]), int(item["first_row"]), int(item["rows"]))
                for item in self.local_features["segments"]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (field names as documented in the README)."""
        return {"format": FORMAT_NAME, "format_version": self.format_version, "pinid_version": self.pinid_version,
                "created_at": self.created_at, "encoder": self.encoder,
                "counts": {"pins": self.pins, "images": self.images}, "vectors": self.vectors,
                "local_features": self.local_features, "calibration": self.calibration,
                "catalogue": {"source": self.catalogue_source}, "next_image_id": self.next_image_id,
                "local_config": self.local_config, "generation": self.generation, "changes": self.changes}

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data: Any, where: Path) -> "Manifest":
        """Check every field; any problem is one ``IndexFormatError`` naming the index."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{where}: {MANIFEST_FILE} is not a pinid index manifest")
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise IndexFormatError(f"index {where} has format version {version}; this pinid ({__version__}) "
                                   f"reads versions {', '.join(map(str, READABLE_VERSIONS))}: rebuild the index")
        try:
            counts, local, encoder = data["counts"], data["local_features"], data["encoder"]
            manifest = cls(int(version), str(data["pinid_version"]), str(data["created_at"]), encoder,
                           _count(counts["pins"]), _count(counts["images"]), data.get("vectors"), dict(local),
                           dict(data["calibration"]), str(data["catalogue"]["source"]),
                           _count(data["next_image_id"]), dict(data.get("local_config", {})),
                           _count(data["generation"]), list(data["changes"]))
            _count(local["descriptors"])
            for segment in manifest.segments:
                _count(segment.rows), _count(segment.first_row)
                if not _SEGMENT_NAME.fullmatch(segment.name):
                    raise ValueError(f"segment name {segment.name!r}")
            if encoder is not None:
                if not isinstance(encoder, dict) or not isinstance(encoder["model"], str):
                    raise TypeError("encoder")
                _count(encoder["embedding_dim"])
                if not isinstance(data["vectors"], dict):
                    raise TypeError("vectors")
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"index {where}: {MANIFEST_FILE} lacks or garbles a field ({exc}); "
                                   "rebuild the index") from None
        try:
            manifest.config()
        except IndexFormatError as exc:
            raise IndexFormatError(f"index {where}: {MANIFEST_FILE}: {exc}; rebuild the index") from None
        return manifest

    def config(self) -> LocalConfig:
        """The local-feature settings the index was built with (and must be queried with)."""
        return LocalConfig.from_dict(self.local_config)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def read_manifest(folder: Path) -> Manifest:
    """Read and validate ``manifest.json``; every failure is an ``IndexFormatError``."""
    if not folder.exists():
        raise IndexFormatError(f"index {folder} does not exist; build it with `pinid build-index`")
    if not folder.is_dir():
        raise IndexFormatError(f"index {folder} is not a directory")
    try:
        text = (folder / MANIFEST_FILE).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise IndexFormatError(f"{folder} is not a pinid index ({MANIFEST_FILE} is missing)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"index {folder}: {MANIFEST_FILE} cannot be read ({exc})") from None
    try:
        data = parse_json(text)
    except ValueError as exc:
        raise IndexFormatError(f"index {folder}: {MANIFEST_FILE} is damaged ({exc})") from None
    return Manifest.from_dict(data, folder)


def check_encoder(folder: Path, recorded: dict[str, Any], encoder: "Encoder") -> None:
    """Refuse to query an index with another model, other weights or other preprocessing."""
    current = encoder.identity()
    built_with = EncoderSpec(recorded["model"], recorded.get("pretrained")).describe()
    same_weights = (recorded.get("weights_sha256") == current["weights_sha256"]
                    if recorded.get("weights_sha256") else built_with == encoder.spec.describe())
    problems = []
    if not same_weights:
        problems.append("different weights")
    if recorded.get("embedding_dim") != current["embedding_dim"]:
        problems.append(f"dimension {current['embedding_dim']} vs {recorded.get('embedding_dim')}")
    if recorded.get("preprocess") != current["preprocess"]:
        problems.append("different preprocessing")
    if problems:
        raise EncoderMismatchError(
            f"index {folder} was built with encoder {built_with} but is queried with "
            f"{encoder.spec.describe()} ({', '.join(problems)}); use the same encoder or rebuild the index")


def is_index_directory(folder: Path) -> bool:
    """True for a pinid index (format marker in its manifest, nothing foreign inside) or an empty folder.

    This is what a build may replace: a folder that merely holds a file named
    ``manifest.json`` (a catalogue, a photo folder) is not an index.
    """
    try:
        entries = {entry.name for entry in folder.iterdir()}
    except OSError:
        return False
    if not entries:
        return True
    if not entries <= INDEX_ENTRIES or MANIFEST_FILE not in entries:
        return False
    try:
        data = parse_json((folder / MANIFEST_FILE).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


__all__ = ["DATABASE_FILE", "FORMAT_NAME", "FORMAT_VERSION", "INDEX_ENTRIES", "LOCAL_DIR", "MANIFEST_FILE",
           "READABLE_VERSIONS", "Manifest", "VECTORS_FILE", "VOCABULARY_FILE", "check_encoder", "is_index_directory",
           "read_manifest"]
