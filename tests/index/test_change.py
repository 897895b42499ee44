"""Adding, updating and removing pins in place (``PinIndex.add/update/remove``, ``pinid add/update/remove``).

The central promise: after any sequence of changes the index answers exactly
as a fresh build of the final catalogue does (same pins, same scores), and
only the changed images are encoded and extracted.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import pinid.index.build as build_module
from pinid.catalogue import read_catalogue
from pinid.encoder.clip import Encoder
from pinid.errors import IndexFormatError, InputError
from pinid.index import PinIndex
from tests.local.test_glance import PINS as FLAT_PINS
from tests.support import PERSPECTIVE, background, corrupt_files, pin, place, run


def _write_pin(root: Path, pin_id: str, seeds: list[int], name: str | None = None, **metadata: Any) -> Path:
    folder = root / pin_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pin.json").write_text(json.dumps({"name": name or f"Pin {pin_id}", **metadata}))
    for number, seed in enumerate(seeds):
        pin(seed).save(folder / f"img{number}.png")
    return folder


def _photo(seed: int) -> Image.Image:
    return Image.fromarray(place(background(seed=seed + 7), pin(seed), PERSPECTIVE))


QUERY_SEEDS = [10, 11, 13, 14, 15, 16, 12, 999]  # 999 and (after removal) 12 are not in the final index


def _answers(index: PinIndex) -> list[tuple[str | None, float, list[tuple[str, float | None, float | None]]]]:
    out = []
    for seed in QUERY_SEEDS:
        result = index.identify(_photo(seed), k=3)
        best = result.matches[0].pin_id if result.matches and not result.unknown else None
        out.append((best, result.confidence,
                    [(m.pin_id, m.similarity, m.probability) for m in result.matches]))
    return out


def _assert_same_answers(changed: PinIndex, fresh: PinIndex) -> None:
    for (best_a, confidence_a, matches_a), (best_b, confidence_b, matches_b) in zip(_answers(changed),
                                                                                     _answers(fresh)):
        assert best_a == best_b
        assert confidence_a == pytest.approx(confidence_b, abs=1e-5)
        assert [m[0] for m in matches_a] == [m[0] for m in matches_b]
        for a, b in zip(matches_a, matches_b):
            assert (a[1] is None) == (b[1] is None) and (a[1] is None or a[1] == pytest.approx(b[1], abs=1e-5))
            assert a[2] == pytest.approx(b[2], abs=1e-5)


# local features only: CLIP vectors through changes are covered by the approximate-index and CLI tests (CI time)
def test_any_sequence_of_changes_answers_as_a_fresh_build_of_the_final_catalogue(tmp_path: Path) -> None:
    encoder = None
    start = tmp_path / "start"
    for number in range(4):
        _write_pin(start, f"pin-{number}", [10 + number])
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", encoder)
    assert index.generation == 1

    more = tmp_path / "more"
    _write_pin(more, "pin-4", [14])
    _write_pin(more, "pin-5", [15])
    _write_pin(more, "pin-1", [11, 21])  # a known pin: only its new image is added
    report = index.add(read_catalogue(more))
    assert sorted(report.pins_added) == ["pin-4", "pin-5"] and report.images_added == 3 and report.unchanged == 1
    assert index.generation == 2 and len(index) == 6

    assert index.remove(["pin-2"]).images_removed == 1
    changed = tmp_path / "changed"
    _write_pin(changed, "pin-3", [13, 23], name="Pin three, reissued", year=2026)  # one image kept, one new
    _write_pin(changed, "pin-6", [16])  # update adds pins it does not know
    report = index.update(read_catalogue(changed))
    assert report.pins_replaced == ["pin-3"] and report.pins_added == ["pin-6"] and report.images_added == 2
    assert index.remove(["pin-0"]).generation == 5
    index.add(read_catalogue(start / ".." / "start"))  # pin-0 and pin-2 back, the others unchanged
    assert index.generation == 6

    final = tmp_path / "final"
    for number in (0, 2):
        _write_pin(final, f"pin-{number}", [10 + number])
    _write_pin(final, "pin-1", [11, 21])
    _write_pin(final, "pin-3", [13, 23], name="Pin three, reissued", year=2026)
    for number in (4, 5, 6):
        _write_pin(final, f"pin-{number}", [10 + number])
    fresh = PinIndex.build(read_catalogue(final), tmp_path / "fresh", encoder)

    reopened = PinIndex.load(tmp_path / "idx", encoder=encoder)
    assert len(reopened) == len(fresh) == 7
    assert reopened.manifest.images == fresh.manifest.images == 9
    assert reopened.recogniser.store.live_rows == fresh.recogniser.store.live_rows
    assert reopened.info()["counts"] == fresh.info()["counts"]
    _assert_same_answers(reopened, fresh)
    # two photos at once, as a server's workers answer them: the same answers, and no crash in FAISS (searches once
    # shared one parameters object, which an ID map changes while it searches)
    alone = _answers(reopened)
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(lambda _: _answers(reopened), range(2)))
    assert together == [alone, alone]
    pin3 = [row for row in reopened._table.pins.values() if row.pin_id == "pin-3"][0]
    assert pin3.name == "Pin three, reissued" and pin3.metadata["year"] == 2026


def test_only_new_images_are_extracted_and_unchanged_segments_are_linked_not_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = tmp_path / "start"
    for number in range(3):
        _write_pin(start, f"pin-{number}", [10 + number])
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", None)
    first_segment = tmp_path / "idx" / "local" / "000000" / "descriptors.npy"
    inode = os.stat(first_segment).st_ino

    extracted: list[str] = []
    real = build_module.reference_image

    def counting(path: Path, *args: Any, **kwargs: Any) -> Image.Image:
        extracted.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(build_module, "reference_image", counting)
    more = tmp_path / "more"
    _write_pin(more, "pin-0", [10])  # same content as the indexed image: not extracted
    _write_pin(more, "pin-9", [19, 29])
    report = index.add(read_catalogue(more))
    assert sorted(extracted) == ["img0.png", "img1.png"] and report.images_added == 2 and report.unchanged == 1
    assert os.stat(first_segment).st_ino == inode  # the old segment is the same file, hard-linked
    assert sorted(p.name for p in (tmp_path / "idx" / "local").iterdir()) == ["000000", "000001"]

    index.remove(["pin-0", "pin-1", "pin-2"])  # the first segment has no live image left: it goes
    assert sorted(p.name for p in (tmp_path / "idx" / "local").iterdir()) == ["000001"]
    assert index.identify(_photo(19)).matches[0].pin_id == "pin-9"


def test_adding_nothing_new_writes_no_generation(tmp_path: Path) -> None:
    start = tmp_path / "start"
    _write_pin(start, "pin-0", [10])
    _write_pin(start, "pin-1", [11])
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", None)
    report = index.add(read_catalogue(start))
    assert not report.changed and report.unchanged == 2 and index.generation == 1
    report = index.update(read_catalogue(start))  # the same names, metadata, contents and paths
    assert not report.changed and index.generation == 1
    (start / "pin-1" / "pin.json").write_text(json.dumps({"name": "Pin pin-1", "year": 1999}))
    report = index.update(read_catalogue(start))
    assert report.pins_replaced == ["pin-1"] and report.images_added == 0 and index.generation == 2


def test_bad_images_in_a_change_are_skipped_and_listed_and_a_pin_with_none_left_is_kept(tmp_path: Path) -> None:
    start = tmp_path / "start"
    _write_pin(start, "pin-0", [10])
    _write_pin(start, "pin-1", [11])
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", None)

    more = tmp_path / "more"
    _write_pin(more, "pin-2", [12])
    corrupt_files(more / "pin-2")  # beside a good image
    corrupt_files(more / "pin-3")  # a new pin of bad images only
    report = index.add(read_catalogue(more))
    assert report.pins_added == ["pin-2"] and report.images_added == 1
    skipped = dict(report.skipped)
    assert len([where for where in skipped if "pin-2" in where]) == 3
    assert "pin-3" in skipped and "none of its images" in skipped["pin-3"]

    broken = tmp_path / "broken"
    corrupt_files(broken / "pin-1")
    (broken / "pin-1" / "pin.json").write_text(json.dumps({"name": "should not stick"}))
    report = index.update(read_catalogue(broken))
    assert "pin-1" in dict(report.skipped) and not report.pins_replaced
    assert index.reference_images("pin-1") and index.identify(_photo(11)).matches[0].pin_id == "pin-1"
    assert [row.name for row in index._table.pins.values() if row.pin_id == "pin-1"] == ["Pin pin-1"]


def test_removing_unknown_or_all_pins_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    start = tmp_path / "start"
    _write_pin(start, "pin-0", [10])
    _write_pin(start, "pin-1", [11])
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", None)
    with pytest.raises(InputError, match="not in index .*pin-7.*nothing removed"):
        index.remove(["pin-0", "pin-7"])
    with pytest.raises(InputError, match="empty"):
        index.remove(["pin-0", "pin-1"])
    with pytest.raises(InputError, match="at least one"):
        index.remove([])
    assert index.generation == 1 and len(PinIndex.load(tmp_path / "idx")) == 2


def test_changing_what_is_not_an_index_is_refused(tmp_path: Path, tiny_encoder: Encoder) -> None:
    from pinid.index.change import change_index

    start = tmp_path / "start"
    _write_pin(start, "pin-0", [10])
    catalogue = read_catalogue(start)
    with pytest.raises(IndexFormatError, match="does not exist"):
        change_index(tmp_path / "nowhere", "add", catalogue=catalogue)
    with pytest.raises(IndexFormatError, match="not a pinid index"):
        change_index(start, "add", catalogue=catalogue)  # a catalogue folder is never touched
    assert sorted(p.name for p in (start / "pin-0").iterdir()) == ["img0.png", "pin.json"]
    clip_index = PinIndex.build(catalogue, tmp_path / "clip", tiny_encoder)
    with pytest.raises(InputError, match="needs its encoder"):
        change_index(clip_index.path, "add", catalogue=catalogue, encoder=None)
    assert PinIndex.load(clip_index.path, encoder=None).generation == 1


def test_cli_add_update_remove_and_info(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    start = tmp_path / "start"
    _write_pin(start, "pin-0", [10])
    _write_pin(start, "pin-1", [11])
    index_dir = tmp_path / "idx"
    code, out, err = run(capsys, "build-index", start, "-o", index_dir, "--encoder", "local", "-q")
    assert code == 0, err
    more = tmp_path / "more"
    _write_pin(more, "pin-2", [12])
    code, out, err = run(capsys, "add", index_dir, more, "-q")
    assert code == 0, err
    assert "1 new pins" in out and "1 images added" in out and "generation 2" in out
    code, out, err = run(capsys, "add", index_dir, more, "-q")
    assert code == 0 and "Nothing to add" in out and "generation 2 unchanged" in out
    _write_pin(more, "pin-2", [22], name="Renamed")
    code, out, err = run(capsys, "update", index_dir, more, "-q")
    assert code == 0 and "1 pins replaced" in out and "generation 3" in out, out + err
    code, out, err = run(capsys, "remove", index_dir, "pin-1")
    assert code == 0 and "Removed 1 pins (1 images)" in out and "generation 4" in out
    code, out, err = run(capsys, "remove", index_dir, "pin-1")
    assert code == 2 and "pinid: error:" in err and "pin-1" in err and "Traceback" not in err
    code, out, err = run(capsys, "info", index_dir)
    assert code == 0 and "generation: 4 (last change: remove" in out and "-1 pins" in out
    code, out, err = run(capsys, "add", tmp_path / "nowhere", more)
    assert code == 5 and "does not exist" in err
    code, out, err = run(capsys, "add", index_dir, tmp_path / "no-catalogue")
    assert code != 0 and "pinid: error:" in err
    answer = PinIndex.load(index_dir).identify(_photo(22))
    assert answer.matches[0].pin_id == "pin-2" and answer.matches[0].name == "Renamed"


def test_an_approximate_vector_index_is_recorded_and_changed_in_place(tmp_path: Path, tiny_encoder: Encoder,
                                                                      capsys: pytest.CaptureFixture) -> None:
    start = tmp_path / "start"
    for number in range(4):
        _write_pin(start, f"pin-{number}", [10 + number])
    code, out, err = run(capsys, "build-index", start, "-o", tmp_path / "idx", "--model",
                         f"local-dir:{tiny_encoder.spec.model.split(':', 1)[1]}", "--index-type", "ivf-sq8", "-q")
    assert code == 0, err
    index = PinIndex.load(tmp_path / "idx")
    vectors = index.manifest.vectors
    assert vectors is not None and vectors["index"]["kind"] == "ivf-sq8" and vectors["requested"] == "ivf-sq8"
    assert vectors["faiss_index"].startswith("IVF") and vectors["faiss_index"].endswith(",SQ8")
    photo_vectors = tiny_encoder.encode_images([pin(seed) for seed in (10, 11, 12, 13)]).vectors
    assert [found[0].pin_id for found in index.search(photo_vectors, k=1)] == [f"pin-{n}" for n in range(4)]

    more = tmp_path / "more"
    _write_pin(more, "pin-4", [14])
    index.add(read_catalogue(more))
    index.remove(["pin-0"])
    assert index.manifest.vectors["index"]["kind"] == "ivf-sq8"
    photo_vectors = tiny_encoder.encode_images([pin(seed) for seed in (11, 14)]).vectors
    assert [found[0].pin_id for found in index.search(photo_vectors, k=1)] == ["pin-1", "pin-4"]
    assert "pin-0" not in [m.pin_id for m in index.search(photo_vectors, k=10)[0]]
    code, out, err = run(capsys, "build-index", start, "-o", tmp_path / "bad", "--encoder", "local",
                         "--index-type", "hnsw")
    assert code == 2 and "hnsw" in err


def test_small_segments_are_merged_so_the_vote_searches_few_shards_and_answers_stay_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pinid.index.change as change_module

    monkeypatch.setattr(change_module, "MAX_SEGMENTS", 3)
    start = tmp_path / "start"
    for number in range(3):
        _write_pin(start, f"pin-{number}", [10 + number])
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", None)
    for number in range(3, 7):
        more = tmp_path / f"more-{number}"
        _write_pin(more, f"pin-{number}", [10 + number])
        index.add(read_catalogue(more))
        assert len(index.manifest.segments) <= 3
        assert len(list((tmp_path / "idx" / "local").iterdir())) == len(index.manifest.segments)
    index.remove(["pin-4"])
    final = tmp_path / "final"
    for number in (0, 1, 2, 3, 5, 6):
        _write_pin(final, f"pin-{number}", [10 + number])
    fresh = PinIndex.build(read_catalogue(final), tmp_path / "fresh", None)
    assert index.recogniser.store.live_rows == fresh.recogniser.store.live_rows
    _assert_same_answers(PinIndex.load(tmp_path / "idx"), fresh)


def test_a_change_is_asked_for_in_one_clear_form_and_calibration_is_logged(tmp_path: Path) -> None:
    from pinid.index.change import change_index

    start = tmp_path / "start"
    _write_pin(start, "pin-0", [10])
    _write_pin(start, "pin-1", [11])
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", None)
    with pytest.raises(InputError, match="take a catalogue"):
        change_index(index.path, "add")
    with pytest.raises(InputError, match="take a catalogue"):
        change_index(index.path, "remove", catalogue=read_catalogue(start), remove=["pin-0"])
    with pytest.raises(InputError, match="unknown change"):
        change_index(index.path, "rename", catalogue=read_catalogue(start))  # type: ignore[arg-type]
    index.replace_calibration(index.calibration)
    assert index.generation == 2 and index.manifest.changes[-1]["action"] == "calibrate"


def test_an_index_of_the_previous_format_answers_as_before_and_a_change_brings_it_to_todays(tmp_path: Path) -> None:
    start = tmp_path / "start"
    for number in range(2):
        _write_pin(start, f"pin-{number}", [20 + number])
    (start / "flag").mkdir()
    FLAT_PINS["flag"].save(start / "flag" / "front.png")  # white enamel inside a thin rim
    index = PinIndex.build(read_catalogue(start), tmp_path / "idx", None)
    today = [(m.pin_id, m.inliers) for m in index.identify(_photo(21)).matches]
    # what version 3 wrote: no silhouette pixels in the thumbnails' alpha, and the version in the manifest
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["format_version"] = 3
    manifest_path.write_text(json.dumps(manifest))
    for colour_path in (tmp_path / "idx" / "local").glob("*/colour.npy"):
        colour = np.load(colour_path)
        assert (colour[..., 3] == 128).any()  # the flag's white cross: silhouette, not wholly pin
        colour[..., 3] = np.where(colour[..., 3] == 255, 255, 0)
        colour_path.unlink()  # hard-linked segments: write a new file, never through the link
        np.save(colour_path, colour)
    old = PinIndex.load(tmp_path / "idx", encoder=None)
    assert old.manifest.format_version == 3
    assert [(m.pin_id, m.inliers) for m in old.identify(_photo(21)).matches] == today
    _write_pin(start, "pin-3", [23])
    old.add(read_catalogue(start))
    assert json.loads(manifest_path.read_text())["format_version"] == 4
    assert PinIndex.load(tmp_path / "idx", encoder=None).identify(_photo(23)).matches[0].pin_id == "pin-3"
