"""A damaged catalogue table is an IndexFormatError (exit 5), never a traceback later on."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from pinid.catalogue import read_catalogue
from pinid.errors import IndexFormatError
from pinid.index import PinIndex
from tests.support import draw_pin_image, run, write_catalogue


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("storage")
    return PinIndex.build(read_catalogue(write_catalogue(root / "cat")), root / "idx", None).path


def _damaged_copy(source: Path, target: Path, sql: str) -> Path:
    shutil.copytree(source, target)
    connection = sqlite3.connect(target / "catalogue.sqlite")
    connection.execute(sql)
    connection.commit()
    connection.close()
    return target


@pytest.mark.parametrize("sql, message", [
    ("UPDATE pins SET metadata = 'not json' WHERE pin_row = 0", "unreadable metadata"),
    ("UPDATE pins SET metadata = '[1, 2]' WHERE pin_row = 0", "unreadable metadata"),
    ("DELETE FROM pins WHERE pin_row = 1", "belongs to no pin"),
], ids=["metadata not JSON", "metadata not an object", "missing pin row"])
def test_damaged_table_is_a_format_error(local_index: Path, tmp_path: Path, sql: str, message: str,
                                         capsys: pytest.CaptureFixture) -> None:
    damaged = _damaged_copy(local_index, tmp_path / "idx", sql)
    with pytest.raises(IndexFormatError, match=message):
        PinIndex.load(damaged, encoder=None)
    photo = tmp_path / "photo.png"
    draw_pin_image(0).save(photo)
    code, _, err = run(capsys, "identify", str(photo), "-i", str(damaged))
    assert code == 5 and message in err and err.count("\n") == 1
