"""Readers see one generation: never a mix of two, whatever a writer does meanwhile.

A writer process adds and removes a pin in a loop and records what each
generation it wrote holds; this process loads the index over and over
meanwhile and checks that every load is whole and is exactly one of the
generations the writer wrote. Then ``reload()``, and a swap forced between
two file opens of one load (the old bug: 27 mixed loads in 11,441).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pinid.index.pin_index as pin_index_module
from pinid._atomic import _exchange
from pinid.catalogue import read_catalogue
from pinid.identify.recogniser import LocalConfig
from pinid.index.pin_index import PinIndex
from pinid.local.features import FeatureConfig

from ..support import draw_pin_image

REPOSITORY = Path(__file__).resolve().parents[2]
IMAGE_SIDE = 128
MIN_LOADS = 1000
# fewer views per reference image than the default: feature extraction is not what is tested here
CHEAP = LocalConfig(features=FeatureConfig(reference_view_long_sides_px=(128,), tilt_directions_deg=(0,),
                                           tilted_view_long_sides_px=(96,), max_reference_features=300,
                                           max_query_features=1000))

# Adds pin-extra, removes it, adds it again ... until the stop file appears; after each change it appends
# what the generation it just wrote holds (read back by the only writer: nothing can swap it meanwhile).
WRITER = r'''
import json, os, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["repository"])

import pinid.index.change as change
from pinid.catalogue import read_catalogue
from pinid.index.pin_index import PinIndex

real_entries, remembered = change.reference_entries, {}


def entries(paths, options, on_progress):  # the same image is added again and again: extract it once
    key = tuple(str(p) for p in paths)
    if key not in remembered:
        remembered[key] = real_entries(paths, options, on_progress)
    return remembered[key]


change.reference_entries = entries


def record(index, log):
    state = index._state
    log.write(json.dumps({
        "generation": index.generation,
        "pins": sorted(row.pin_id for row in state.table.pins.values()),
        "images": state.table.image_ids.tolist(),
        "descriptors": int(state.recogniser.vocabulary.ntotal), "source": index.manifest.catalogue_source,
        "segments": [s.name for s in index.manifest.segments]}) + "\n")
    log.flush()


index = PinIndex.load(spec["index"], encoder=None)
extra = read_catalogue(spec["extra"])
changes = 0
with open(spec["log"], "a", encoding="utf-8") as log:
    record(index, log)
    while not os.path.exists(spec["stop"]) and changes < spec["max_changes"]:
        if "pin-extra" in {row.pin_id for row in index._state.table.pins.values()}:
            index.remove(["pin-extra"])
        else:
            index.add(extra)
        changes += 1
        record(index, log)
        time.sleep(spec["pause"])
'''


def _write_pin(root: Path, pin_id: str, seed: int) -> Path:
    folder = root / pin_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pin.json").write_text(json.dumps({"name": f"Pin {pin_id}"}))
    image = folder / "img0.png"
    draw_pin_image(seed, IMAGE_SIDE).save(image)
    return image


def _build(root: Path, name: str, pin_ids: list[str], seed: int) -> tuple[Path, dict[str, Path]]:
    photos = {pin_id: _write_pin(root / f"{name}-catalogue", pin_id, seed + n) for n, pin_id in enumerate(pin_ids)}
    PinIndex.build(read_catalogue(root / f"{name}-catalogue"), root / name, None, config=CHEAP)
    return root / name, photos


def _state(index: PinIndex) -> dict[str, Any]:
    """What one load holds, part by part; raises AssertionError if its parts disagree with each other."""
    state = index._state
    manifest = state.manifest
    table_images = state.table.image_ids.tolist()
    pins = sorted(row.pin_id for row in state.table.pins.values())
    store = state.recogniser.store
    assert store.image_ids.tolist() == table_images, "store and table list different images"
    assert len(table_images) == manifest.images and len(pins) == manifest.pins, "table disagrees with manifest"
    vocabulary = state.recogniser.vocabulary
    assert int(vocabulary.ntotal) == manifest.descriptors, "vocabulary"
    assert int(vocabulary.ntotal) - vocabulary.excluded == store.live_rows, "removed rows not excluded"
    assert [s.name for s in store.segments] == [s.name for s in manifest.segments], "segments"
    assert state.recogniser.table is state.table
    return {"generation": index.generation, "pins": pins, "images": table_images, "source": manifest.catalogue_source,
            "descriptors": manifest.descriptors, "segments": [s.name for s in manifest.segments]}


def test_reader_loop_against_writer_loop_sees_no_mixed_generation(tmp_path: Path) -> None:
    folder, _ = _build(tmp_path, "index", ["pin-000", "pin-001", "pin-002"], 8000)
    extra_photo = _write_pin(tmp_path / "extra-catalogue", "pin-extra", 8100)
    log, stop, script = tmp_path / "generations.jsonl", tmp_path / "stop", tmp_path / "writer.py"
    script.write_text(WRITER)
    spec = {"repository": str(REPOSITORY), "index": str(folder), "extra": str(tmp_path / "extra-catalogue"),
            "log": str(log), "stop": str(stop), "max_changes": 5000, "pause": 0.005}
    errors_file = tmp_path / "writer.stderr"
    with open(errors_file, "w") as stderr:
        writer = subprocess.Popen([sys.executable, str(script), json.dumps(spec)], stderr=stderr)
    loads: list[dict[str, Any]] = []
    errors: list[str] = []
    answers: list[tuple[int, bool, str | None]] = []
    raced = 0  # loads during which the directory was swapped
    try:
        deadline = time.monotonic() + 120
        while not log.exists() or len(log.read_text().splitlines()) < 3:  # the writer is under way
            assert writer.poll() is None, errors_file.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first_changes = len(log.read_text().splitlines())
        while (len(loads) + len(errors) < MIN_LOADS or raced < 5
               or len(log.read_text().splitlines()) < first_changes + 20):  # at least 20 changes while reading
            assert writer.poll() is None, "the writer stopped: " + errors_file.read_text()
            assert time.monotonic() < deadline, f"{len(loads)} loads, {raced} raced a swap in the time allowed"
            before = os.stat(folder).st_ino
            try:
                index = PinIndex.load(folder, encoder=None)
                loads.append(_state(index))
            except Exception as exc:  # every failure counts: a reader must never see a broken index
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            raced += os.stat(folder).st_ino != before
            if len(loads) % 40 == 0:  # answer from that generation, long after the writer replaced it
                answer = index.identify(extra_photo, k=1)
                answers.append((len(loads) - 1, answer.unknown, answer.matches[0].pin_id if answer.matches else None))
    finally:
        stop.touch()
        try:
            writer.wait(timeout=60)
        finally:
            if writer.poll() is None:
                writer.kill()
    assert writer.returncode == 0, errors_file.read_text()
    written = {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        written[record["generation"]] = record
    assert not errors, f"{len(errors)} of {len(loads) + len(errors)} loads failed: {errors[:3]}"
    mixed = [state for state in loads if written.get(state["generation"]) != state]
    assert not mixed, f"{len(mixed)} of {len(loads)} loads were not a generation the writer wrote: {mixed[:2]}"
    generations = {state["generation"] for state in loads}
    assert len(loads) >= MIN_LOADS and len(generations) >= 10 and raced >= 5, (len(loads), len(generations), raced)
    assert {("pin-extra" in state["pins"]) for state in loads} == {True, False}
    for position, unknown, top in answers:
        has_extra = "pin-extra" in loads[position]["pins"]
        assert (top == "pin-extra" and not unknown) == has_extra, (loads[position]["generation"], unknown, top)


def test_reload_moves_to_the_newest_generation_only_when_there_is_one(tmp_path: Path) -> None:
    folder, photos = _build(tmp_path, "index", ["pin-000", "pin-001", "pin-002"], 8200)
    new_photo = _write_pin(tmp_path / "extra-catalogue", "pin-extra", 8300)
    reader = PinIndex.load(folder, encoder=None)
    writer = PinIndex.load(folder, encoder=None)
    assert reader.generation == 1 and reader.reload() is False
    assert reader.identify(new_photo, k=1).unknown

    report = writer.add(read_catalogue(tmp_path / "extra-catalogue"))
    assert report.generation == writer.generation == 2
    assert reader.generation == 1  # still answers from the generation it loaded, whose folder is gone now
    assert reader.identify(new_photo, k=1).unknown
    assert reader.identify(photos["pin-001"], k=1).matches[0].pin_id == "pin-001"

    assert reader.reload() is True
    assert reader.generation == 2 and len(reader) == 4
    answer = reader.identify(new_photo, k=1)
    assert not answer.unknown and answer.matches[0].pin_id == "pin-extra"
    assert reader.reload() is False and reader.generation == 2

    writer.remove(["pin-extra"])
    writer.remove(["pin-000"])
    assert reader.reload() is True and reader.generation == 4  # straight to the newest, skipping 3
    assert sorted(reader.info()["counts"].values()) == [2, 2]
    assert reader.reload() is False


def _swap_during_load(monkeypatch: pytest.MonkeyPatch, step: str, swap: Any) -> None:
    """Run ``swap()`` once, just before ``read_generation`` reads ``step``: between two file opens."""
    done = []

    def before(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not done:
                done.append(True)
                swap()
            return original(*args, **kwargs)
        return wrapper

    if step == "store":
        original_load = pin_index_module.LocalStore.load

        class Store:
            load = staticmethod(before(original_load))

        monkeypatch.setattr(pin_index_module, "LocalStore", Store)
    else:
        monkeypatch.setattr(pin_index_module, step, before(getattr(pin_index_module, step)))


@pytest.mark.parametrize("by_handle", [True, False], ids=["by-handle", "by-path"])
@pytest.mark.parametrize("step", ["read_table", "store", "read_vocabulary"])
def test_a_directory_swapped_between_two_opens_gives_one_generation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, by_handle: bool) -> None:
    """The old bug: two indexes with the same counts swapped mid-load gave one's manifest and the other's pins,
    and named a wrong pin with full confidence. Here both hold the same images under other pin ids, so
    every count agrees and only the pins (and the catalogue the manifest names) tell them apart.

    ``by-path`` is a system without ``/proc/self/fd``: files are opened by path, and a load
    that saw the directory change is read again.
    """
    first, first_photos = _build(tmp_path, "first", ["a-0", "a-1", "a-2", "a-3"], 8400)
    second, _ = _build(tmp_path, "second", ["b-0", "b-1", "b-2", "b-3"], 8400)
    expected = {path: _state(PinIndex.load(path, encoder=None)) for path in (first, second)}
    differ = {key for key in expected[first] if expected[first][key] != expected[second][key]}
    assert differ == {"pins", "source"}
    if not by_handle:  # no /proc/self/fd here
        monkeypatch.setattr(pin_index_module, "Path", lambda *parts: Path(*parts) if not str(parts[0]).startswith(
            "/proc/self/fd/") else tmp_path / "no-proc")
    # pinid's own swap: the other generation is moved in and the one being read stays whole beside it
    _swap_during_load(monkeypatch, step, lambda: _exchange(first, second) or pytest.fail("no renameat2"))
    index = PinIndex.load(first, encoder=None)
    state = _state(index)
    monkeypatch.undo()
    # by handle: the generation that was there when the load began; by path: read again after the swap
    assert state == (expected[first] if by_handle else expected[second])
    answer = index.identify(first_photos["a-1"], k=1)
    assert not answer.unknown and answer.matches[0].pin_id == ("a-1" if by_handle else "b-1")


def test_a_change_that_deletes_the_generation_being_read_gives_the_new_one_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = _build(tmp_path, "index", ["pin-000", "pin-001", "pin-002"], 8600)
    writer = PinIndex.load(folder, encoder=None)
    old = _state(writer)
    # a whole change (new generation swapped in, the old folder deleted) between the table and the store
    _swap_during_load(monkeypatch, "store", lambda: writer.remove(["pin-001"]))
    state = _state(PinIndex.load(folder, encoder=None))
    monkeypatch.undo()
    assert state == _state(PinIndex.load(folder, encoder=None)) != old
    assert state["generation"] == 2 and state["pins"] == ["pin-000", "pin-002"]
    assert np.array_equal(state["images"], [0, 2])


def test_a_reader_waits_out_a_swap_by_two_renames_and_names_a_dead_one_clearly(tmp_path: Path) -> None:
    """Without renameat2 a writer renames the index away, then the new one in: a reader in between waits."""
    import threading

    index_dir, _ = _build(tmp_path, "idx", ["pin-a", "pin-b"], 3)
    backup = index_dir.parent / f".{index_dir.name}.old-abcdefgh"
    os.rename(index_dir, backup)
    restorer = threading.Timer(0.1, os.rename, (backup, index_dir))
    restorer.start()
    try:
        assert len(PinIndex.load(index_dir)) == 2
    finally:
        restorer.join()
    os.rename(index_dir, backup)  # the writer died between its renames: no one puts it back
    with pytest.raises(pin_index_module.IndexFormatError, match="does not exist"):
        PinIndex.load(index_dir)
