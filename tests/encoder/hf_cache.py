"""A Hugging Face hub cache laid out exactly as ``huggingface_hub`` leaves a download.

``HF_HOME/hub/models--ORG--REPO/`` holds ``refs/main`` (the revision hash),
``blobs/<sha256>`` (the file contents) and ``snapshots/<revision>/<name>``, a
relative symlink to the blob.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def repo_folder(hub: Path, repo: str) -> Path:
    """``hub/models--ORG--REPO``, the folder huggingface_hub keeps ``repo`` in."""
    return hub / ("models--" + repo.replace("/", "--"))


def add_snapshot(hub: Path, repo: str, files: dict[str, Path], *, revision: str = REVISION,
                 move: bool = False) -> Path:
    """Put ``files`` (name in the repo -> file here) into the cache as revision ``revision`` of ``repo``.

    ``refs/main`` points at the new revision. ``move=True`` moves big files into
    the blob store instead of copying them. Returns the snapshot folder.
    """
    root = repo_folder(hub, repo)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    snapshot = root / "snapshots" / revision
    for name, source in files.items():
        blob = root / "blobs" / _sha256(source)
        if not blob.exists():
            (shutil.move if move else shutil.copyfile)(str(source), str(blob))
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs" / "main").write_text(revision)  # huggingface_hub writes it without a newline
    return snapshot


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
