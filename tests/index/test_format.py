"""The manifest is checked field by field, and only a real index directory counts as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinid.catalogue import read_catalogue
from pinid.errors import IndexFormatError
from pinid.index import PinIndex
from pinid.index.format import MANIFEST_FILE, Manifest, is_index_directory, read_manifest
from tests.support import run, write_catalogue


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("format")
    return PinIndex.build(read_catalogue(write_catalogue(root / "cat")), root / "idx", None).path


def test_manifest_round_trips(local_index: Path) -> None:
    manifest = read_manifest(local_index)
    assert Manifest.from_dict(manifest.to_dict(), local_index) == manifest
    assert manifest.encoder is None and manifest.pins == 2 and manifest.images == 2 and manifest.descriptors > 0


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("counts"),
    lambda m: m["counts"].pop("images"),
    lambda m: m["counts"].update(images="12"),
    lambda m: m["counts"].update(images=-1),
    lambda m: m.pop("local_features"),
    lambda m: m["local_features"].pop("descriptors"),
    lambda m: m.pop("calibration"),
    lambda m: m.pop("catalogue"),
    lambda m: m.update(encoder={"no": "model"}),
    lambda m: m.update(encoder=[1, 2]),
], ids=["no counts", "no image count", "text count", "negative count", "no local", "no descriptors",
        "no calibration", "no catalogue", "encoder without model", "encoder not an object"])
def test_missing_or_garbled_fields_are_a_format_error(local_index: Path, tmp_path: Path, edit, capsys) -> None:
    data = json.loads((local_index / MANIFEST_FILE).read_text())
    edit(data)
    with pytest.raises(IndexFormatError, match="rebuild"):
        Manifest.from_dict(data, local_index)
    # and `pinid info` on such an index: one line, exit 5 (was a KeyError traceback)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST_FILE).write_text(json.dumps(data))
    code, out, err = run(capsys, "info", str(broken))
    assert code == 5 and err.startswith("pinid: error:") and err.count("\n") == 1 and "Traceback" not in err


def test_manifest_with_huge_number_or_deep_nesting_is_a_format_error(tmp_path: Path) -> None:
    for text in ['{"format": "pinid-index", "x": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000]:
        (tmp_path / MANIFEST_FILE).write_text(text)
        with pytest.raises(IndexFormatError):
            read_manifest(tmp_path)


def test_only_a_real_index_is_an_index_directory(local_index: Path, tmp_path: Path) -> None:
    assert is_index_directory(local_index)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert is_index_directory(empty)
    lookalike = tmp_path / "catalogue"
    lookalike.mkdir()
    (lookalike / MANIFEST_FILE).write_text("{}")  # any file called manifest.json
    assert not is_index_directory(lookalike)
    (lookalike / MANIFEST_FILE).write_text((local_index / MANIFEST_FILE).read_text())
    assert is_index_directory(lookalike)  # the marker and nothing foreign
    (lookalike / "holiday.jpg").write_bytes(b"precious")
    assert not is_index_directory(lookalike)  # a real manifest beside a user's file: not ours to replace
