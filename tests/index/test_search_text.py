"""Text search: `PinIndex.search_text` and `pinid search`, with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pinid.encoder.clip as clip_module
from pinid.catalogue import read_catalogue
from pinid.encoder import Encoder
from pinid.errors import InputError, LocalOnlyError
from pinid.index import PinIndex

from tests.support import draw_pin_image, run

QUERY = "gold fox with a red rim"


def _catalogue(root: Path, pins: int = 6, images_per_pin: int = 2) -> Path:
    for p in range(pins):
        folder = root / f"pin-{p:03d}"
        folder.mkdir(parents=True)
        (folder / "pin.json").write_text(json.dumps({"name": f"Pin number {p}"}))
        for i in range(images_per_pin):
            draw_pin_image(p * 100 + i).save(folder / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def clip_index(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-search")
    encoder = Encoder.load(f"local-dir:{tiny_model_dir}", device="cpu")
    PinIndex.build(read_catalogue(_catalogue(root / "catalogue")), root / "idx", encoder)
    return root / "idx"


@pytest.fixture(scope="module")
def local_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-search-local")
    PinIndex.build(read_catalogue(_catalogue(root / "catalogue", pins=3, images_per_pin=1)), root / "idx", None)
    return root / "idx"


@pytest.fixture(scope="module")
def index(clip_index: Path) -> PinIndex:
    return PinIndex.load(clip_index, device="cpu")


def test_search_text_ranks_pins_by_the_cosine_with_their_best_image(index: PinIndex) -> None:
    matches = index.search_text(QUERY, k=4)
    assert len(matches) == 4 and len({m.pin_id for m in matches}) == 4
    assert [m.rank for m in matches] == [1, 2, 3, 4]
    assert all(a.similarity >= b.similarity for a, b in zip(matches, matches[1:]))
    assert index.encoder is not None
    text = index.encoder.encode_texts([QUERY])
    by_vector = index.search(text, k=4)[0]
    assert [m.pin_id for m in matches] == [m.pin_id for m in by_vector]
    assert np.allclose([m.similarity for m in matches], [m.similarity for m in by_vector], atol=1e-5)
    for match in matches:  # by hand: the text's cosine with each reference image, best one per pin
        images = index.encoder.encode_images(index.reference_images(match.pin_id)).vectors
        cosines = images @ text[0]
        assert match.similarity == pytest.approx(float(cosines.max()), abs=1e-5)
        assert match.reference_image == index.reference_images(match.pin_id)[int(cosines.argmax())]


def test_k_larger_than_the_catalogue_lists_every_pin_once(index: PinIndex) -> None:
    matches = index.search_text("enamel cat", k=50)
    assert sorted(m.pin_id for m in matches) == [f"pin-{p:03d}" for p in range(6)]


def test_loading_and_identifying_never_load_the_text_tower(clip_index: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    calls: list[int] = []
    real = clip_module.create_clip

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_module, "create_clip", counting)
    fresh = PinIndex.load(clip_index, device="cpu")
    assert fresh.encoder is not None
    photo = tmp_path / "photo.png"
    draw_pin_image(201).save(photo)
    fresh.identify(photo, k=3)
    fresh.identify(photo, k=3, verify=False)
    assert len(calls) == 1 and not fresh.encoder.text_loaded
    fresh.search_text(QUERY)
    fresh.search_text("blue whale")
    assert len(calls) == 2 and fresh.encoder.text_loaded


def test_local_only_index_is_a_local_only_error(local_index: Path) -> None:
    with pytest.raises(LocalOnlyError, match="local features only.*text search needs CLIP vectors"):
        PinIndex.load(local_index).search_text(QUERY)


def test_index_loaded_without_encoder_says_how_to_load_it(clip_index: Path) -> None:
    with pytest.raises(InputError, match=r"encoder=None.*PinIndex\.load\(path\)"):
        PinIndex.load(clip_index, encoder=None).search_text(QUERY)


@pytest.mark.parametrize("query, k", [("", 5), ("  \t", 5), (QUERY, 0)])
def test_empty_query_or_k_below_one_is_input_error(index: PinIndex, query: str, k: int) -> None:
    with pytest.raises(InputError, match="empty|at least 1"):
        index.search_text(query, k=k)


def test_cli_prints_a_table(clip_index: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "search", QUERY, "-i", clip_index, "-k", "3", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert QUERY in lines[0]
    assert lines[1].split() == ["rank", "pin", "id", "cosine", "name"]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    expected = PinIndex.load(clip_index, device="cpu").search_text(QUERY, k=3)
    assert [row[1] for row in rows] == [m.pin_id for m in expected]
    assert [float(row[2]) for row in rows] == pytest.approx([m.similarity for m in expected], abs=1e-3)


def test_cli_json_is_valid_and_words_may_come_unquoted(clip_index: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "search", *QUERY.split(), "-i", clip_index, "--json", "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    assert result["query"] == QUERY and len(result["matches"]) == 5
    top = result["matches"][0]
    assert top["rank"] == 1 and top["pin_id"].startswith("pin-") and top["probability"] is None
    assert top["score"] == top["similarity"] and -1.0 <= top["similarity"] <= 1.0


def test_cli_local_only_index_exits_2_with_one_line(local_index: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "search", QUERY, "-i", local_index)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("pinid: error: ") and "local features only" in err


def test_cli_empty_query_exits_2_before_opening_the_index(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "search", "  ", "-i", tmp_path / "absent")  # an absent index would be exit 5
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "text query is empty" in err
