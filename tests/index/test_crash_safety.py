"""``kill -9`` at every write step of a change leaves the old generation or the new one, and no debris.

Each change (add, remove, update, a new calibration) runs in a driver
process that imports pinid once and then forks one child per crash point N.
The child counts every low-level write step (links, renames, fsyncs, mkdirs,
unlinks, copies, ``numpy.save``, ``faiss.write_index``, the SQLite change, the
directory exchange, ``shutil.rmtree`` ...) and kills itself with SIGKILL just
before step N, so nothing of Python's cleanup runs (no ``finally``, no
``except``): the state on disk is what a ``kill -9`` leaves. A first child
runs the change to the end (the new generation, and the list of its steps);
then N goes 1, 2, ... up to the last step. Each crashed copy is checked here
while the driver makes the next: it loads as exactly the old or exactly the
new generation (manifest, table, local store, vocabulary, and the answer to
one photo), the next change succeeds, and afterwards nothing is left beside
or inside the index that does not belong there. The new images' local
features are extracted once and replayed in later children (extraction
writes nothing), so a whole run takes seconds of CPU, not minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from pinid._atomic import stale_siblings
from pinid.catalogue import read_catalogue
from pinid.identify.recogniser import LocalConfig
from pinid.index.change import change_index
from pinid.index.format import DATABASE_FILE, INDEX_ENTRIES, LOCAL_DIR
from pinid.index.pin_index import PinIndex
from pinid.local.features import FeatureConfig

from ..support import draw_pin_image

REPOSITORY = Path(__file__).resolve().parents[2]
IMAGE_SIDE = 128
# fewer views per reference image than the default: a change's feature extraction is not what is tested
CHEAP = LocalConfig(features=FeatureConfig(reference_view_long_sides_px=(128,), tilt_directions_deg=(0,),
                                           tilted_view_long_sides_px=(96,), max_reference_features=300,
                                           max_query_features=1000))
SEGMENT_FILES = {"descriptors.npy", "keypoints.npy", "images.npy", "geometry.npy", "colour.npy", "vocabulary.faiss"}

# The driver: imports pinid once, then forks a child per crash point (cheap: no import per case).
# The parent never runs FAISS or OpenCV itself, so forking is safe (no OpenMP pool to inherit).
DRIVER = r'''
import json, os, pathlib, shutil, signal, sys, traceback

spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["repository"])

import faiss
import numpy
import pinid._atomic as atomic
import pinid.index.change as change
from pinid.catalogue import read_catalogue
from pinid.identify.confidence import Calibration
from pinid.local.features import Features, ReferenceEntry

real_write = os.write
HOOKS = [(os, name) for name in ("link", "rename", "replace", "fsync", "mkdir", "rmdir", "unlink", "ftruncate")]
HOOKS += [(shutil, "copyfile"), (shutil, "rmtree"), (numpy, "save"), (faiss, "write_index"),
          (pathlib.Path, "write_bytes"), (change, "apply_table_change"), (atomic, "_exchange")]


def install(crash_at, pipe):
    count = [0]

    def hooked(owner, name):
        original = getattr(owner, name)
        label = f"{getattr(owner, '__name__', owner)}.{name}"

        def step(*args, **kwargs):
            count[0] += 1
            real_write(pipe, f"{label}\n".encode())
            if count[0] == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no finally, no except, no atexit
            return original(*args, **kwargs)

        setattr(owner, name, step)

    for owner, name in HOOKS:
        hooked(owner, name)


def replay_features(saved):
    """Extract the new images' local features in the first (uncrashed) run only, and replay them after.

    Extraction writes nothing; replaying it spares each crashed child the work and keeps the steps the same.
    """
    real = change.reference_entries

    def entries(paths, options, on_progress):
        if not saved.exists():
            found, failures = real(paths, options, on_progress)
            assert not failures and all(entry is not None for entry in found)
            arrays = {}
            for n, entry in enumerate(found):
                features = entry.features
                arrays.update({f"{n}_keypoints": features.keypoints, f"{n}_descriptors": features.descriptors,
                               f"{n}_size": numpy.array([features.width, features.height]),
                               f"{n}_box": numpy.array(entry.pin_box, numpy.float64), f"{n}_colour": entry.colour})
            with open(saved, "wb") as handle:
                numpy.savez(handle, **arrays)
            return found, failures
        arrays = numpy.load(saved, allow_pickle=False)
        return [ReferenceEntry(Features(arrays[f"{n}_keypoints"], arrays[f"{n}_descriptors"],
                                        *(int(v) for v in arrays[f"{n}_size"])),
                               tuple(float(v) for v in arrays[f"{n}_box"]), arrays[f"{n}_colour"])
                for n in range(len(paths))], []

    change.reference_entries = entries


def change_once(target, crash_at, pipe):
    catalogue = read_catalogue(spec["catalogue"]) if spec.get("catalogue") else None
    replay_features(pathlib.Path(spec["work"]) / "features.npz")
    if not spec["renameat2"]:
        atomic._exchange = lambda a, b: False  # as on a system without it: the swap is two renames
    install(crash_at, pipe)
    action = spec["action"]
    if action == "calibration":
        calibration = Calibration.from_dict(spec["calibration"])
        change.replace_manifest(target, lambda manifest: __import__("dataclasses").replace(
            manifest, calibration=calibration.to_dict()))
    else:
        change.change_index(target, action, catalogue=catalogue, remove=spec.get("remove", ()))


def run_case(crash_at, folder):
    """Copy the base index to ``folder`` and change it in a child killed before step ``crash_at`` (0: never)."""
    folder.parent.mkdir(parents=True)
    shutil.copytree(spec["base"], folder)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            change_once(folder, crash_at, write_end)
        except BaseException:
            real_write(write_end, ("ERROR " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
            os._exit(1)
        os._exit(0)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    result = {"crash_at": crash_at, "case": str(folder), "killed": killed,
              "exit": os.waitstatus_to_exitcode(status), "steps": b"".join(chunks).decode().splitlines()}
    print(json.dumps(result), flush=True)  # the test checks this case while the next one runs
    return result


work = pathlib.Path(spec["work"])
reference = run_case(0, work / "uncrashed" / "idx")  # the new generation, and the list of write steps
if reference["exit"] == 0:
    for crash_at in range(1, len(reference["steps"]) + 1):
        run_case(crash_at, work / f"case-{crash_at:03d}" / "idx")
'''


def _write_pin(root: Path, pin_id: str, seed: int, name: str | None = None) -> Path:
    folder = root / pin_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pin.json").write_text(json.dumps({"name": name or f"Pin {pin_id}", "series": "crash"}))
    image = folder / "img0.png"
    draw_pin_image(seed, IMAGE_SIDE).save(image)
    return image


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small base index (4 pins) and the catalogues of the changes, made once for every case."""
    root = tmp_path_factory.mktemp("crash")
    base_catalogue = root / "base-catalogue"
    photos = {pin_id: _write_pin(base_catalogue, pin_id, 7000 + n) for n, pin_id in
              enumerate(["pin-000", "pin-001", "pin-002", "pin-003"])}
    PinIndex.build(read_catalogue(base_catalogue), root / "base", None, config=CHEAP)
    added = root / "add-catalogue"
    photos["added"] = _write_pin(added, "pin-new", 7100)
    updated = root / "update-catalogue"
    photos["updated"] = _write_pin(updated, "pin-001", 7200, name="Pin one, redrawn")
    return {"root": root, "base": root / "base", "add": added, "update": updated, "photos": photos}


def _run_driver(world: dict[str, Any], name: str, spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The uncrashed change first, then one crashed copy per write step, each as soon as it is made."""
    spec = {**spec, "repository": str(REPOSITORY), "base": str(world["base"]), "work": str(world["root"] / name)}
    script, errors = world["root"] / "driver.py", world["root"] / f"{name}.stderr"
    script.write_text(DRIVER)
    with open(errors, "w") as stderr, subprocess.Popen(
            [sys.executable, str(script), json.dumps(spec)], stdout=subprocess.PIPE, stderr=stderr, text=True,
            cwd=world["root"]) as driver:
        watchdog = threading.Timer(600, driver.kill)  # a hung child must not hang the test run
        watchdog.start()
        try:
            assert driver.stdout is not None
            for line in driver.stdout:
                yield json.loads(line)
            assert driver.wait(timeout=60) == 0, errors.read_text()[-3000:]
        finally:
            watchdog.cancel()
            if driver.poll() is None:
                driver.kill()


def _snapshot(folder: Path, photo: Path) -> dict[str, Any]:
    """What a reader gets from the index at ``folder``: every part of its generation and one answer."""
    index = PinIndex.load(folder, encoder=None)
    state = index._state
    answer = index.identify(photo, k=3)
    return {
        "generation": index.generation,
        "counts": (index.manifest.pins, index.manifest.images, index.manifest.descriptors),
        "next_image_id": index.manifest.next_image_id,
        "segments": [s.to_dict() for s in index.manifest.segments],
        "calibration": index.manifest.calibration,
        "pins": sorted((row.pin_id, row.name) for row in state.table.pins.values()),
        "table_images": state.table.image_ids.tolist(),
        "store_images": state.recogniser.store.image_ids.tolist(),
        "vocabulary": int(state.recogniser.vocabulary.ntotal),
        "answer": ([(m.pin_id, m.name, round(m.probability, 6)) for m in answer.matches],
                   answer.unknown, round(answer.confidence, 6)),
    }


def _assert_no_debris(folder: Path) -> None:
    """Beside the index: nothing but it. Inside: only index entries, and exactly the listed segments."""
    beside = sorted(entry.name for entry in folder.parent.iterdir())
    assert beside == [folder.name], f"left beside the index: {beside}"
    inside = {entry.name for entry in folder.iterdir()}
    assert inside <= INDEX_ENTRIES - {f"{DATABASE_FILE}-{end}" for end in ("journal", "wal", "shm")}, inside
    manifest = PinIndex.load(folder, encoder=None).manifest
    assert sorted(entry.name for entry in (folder / LOCAL_DIR).iterdir()) == sorted(s.name for s in manifest.segments)
    for segment in manifest.segments:
        assert {entry.name for entry in (folder / LOCAL_DIR / segment.name).iterdir()} == SEGMENT_FILES


def _check_every_crash(world: dict[str, Any], name: str, spec: dict[str, Any], photo: Path,
                       changed: str, *, renameat2: bool = True) -> None:
    """Every crash leaves the old or the new generation (without renameat2 also: no index but its backup,
    which the next writer puts back); the next change then succeeds and leaves no debris."""
    results = _run_driver(world, name, {**spec, "renameat2": renameat2})
    reference = next(results)
    assert reference["exit"] == 0, f"{name}: the change failed without a crash: {reference['steps'][-1:]}"
    steps = reference["steps"]
    assert len(steps) > 10, f"{name}: too few write steps seen ({steps}): are the hooks installed?"
    old = _snapshot(world["base"], photo)
    new = _snapshot(Path(reference["case"]), photo)
    _assert_no_debris(Path(reference["case"]))
    assert new["generation"] == old["generation"] + 1
    assert new[changed] != old[changed], f"the change did not change {changed}: the check would prove nothing"
    seen: dict[str, list[int]] = {"old": [], "new": [], "backup only": []}
    crashed_at = set()
    for result in results:
        where = f"{name}: kill -9 before step {result['crash_at']} of {len(steps)} ({result['steps'][-1]})"
        assert result["killed"], f"{where}: the child was not killed: {result}"
        assert result["steps"] == steps[:result["crash_at"]], f"{where}: the steps differ from the uncrashed run"
        crashed_at.add(result["steps"][-1].rsplit(".", 1)[-1])
        folder = Path(result["case"])
        if not renameat2 and not folder.exists():  # killed between the fallback's two renames
            backups = [p for p in stale_siblings(folder) if p.name.startswith(f".{folder.name}.old-")]
            assert len(backups) == 1 and _snapshot(backups[0], photo) == old, f"{where}: {backups}"
            seen["backup only"].append(result["crash_at"])
            state = old
        else:
            state = _snapshot(folder, photo)
            assert state in (old, new), f"{where} left a mixed index: {state}\nold: {old}\nnew: {new}"
            seen["old" if state == old else "new"].append(result["crash_at"])
        report = change_index(folder, "remove", remove=["pin-000"])  # the next run
        assert report.generation == state["generation"] + 1, where
        after = PinIndex.load(folder, encoder=None)
        assert after.generation == report.generation, where
        assert "pin-000" not in {row.pin_id for row in after._table.pins.values()}, where
        _assert_no_debris(folder)
    assert sum(map(len, seen.values())) == len(steps), f"{name}: not every step was crashed: {seen}"
    # the old generation until the exchange, the new one from then on: never back and forth
    assert seen["old"] and seen["new"] and max(seen["old"] + seen["backup only"]) < min(seen["new"]), seen
    assert bool(seen["backup only"]) == (not renameat2), seen
    written = "link" if name == "calibration" else "save" if name.startswith("remove") else "write_index"  # a removal writes no FAISS file
    for expected in ("_exchange", "rmtree", "fsync", written):
        assert expected in crashed_at, f"{name}: no crash was injected at {expected}: {sorted(crashed_at)}"


def test_crash_at_every_step_of_add_leaves_old_or_new(world: dict[str, Any]) -> None:
    _check_every_crash(world, "add", {"action": "add", "catalogue": str(world["add"])},
                       world["photos"]["added"], "pins")


def test_crash_at_every_step_of_remove_leaves_old_or_new(world: dict[str, Any]) -> None:
    _check_every_crash(world, "remove", {"action": "remove", "remove": ["pin-002"]},
                       world["photos"]["pin-002"], "pins")


def test_crash_at_every_step_without_renameat2_is_put_right_by_the_next_change(world: dict[str, Any]) -> None:
    """Where the directories cannot be exchanged (no renameat2) the swap is two renames; a kill between
    them leaves only the backup, and the next change must put it back rather than refuse a missing index."""
    _check_every_crash(world, "remove-by-rename", {"action": "remove", "remove": ["pin-002"]},
                       world["photos"]["pin-002"], "pins", renameat2=False)


def test_crash_at_every_step_of_update_leaves_old_or_new(world: dict[str, Any]) -> None:
    _check_every_crash(world, "update", {"action": "update", "catalogue": str(world["update"])},
                       world["photos"]["updated"], "answer")


def test_crash_at_every_step_of_replace_calibration_leaves_old_or_new(world: dict[str, Any]) -> None:
    calibration = PinIndex.load(world["base"], encoder=None).calibration
    stricter = replace(calibration, unknown_below=0.999, fitted_on="crash test")
    _check_every_crash(world, "calibration", {"action": "calibration", "calibration": stricter.to_dict()},
                       world["photos"]["pin-001"], "calibration")
