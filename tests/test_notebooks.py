"""The notebooks in notebooks/: committed without outputs, and the walkthrough runs with the results it shows.

The walkthrough is executed with nbclient in a kernel of this very interpreter (a
kernelspec written for the test), on a copy of ``examples/`` in a temporary folder,
so the run never writes into the checkout and the committed file stays stripped.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from pinid.evaluation.boards import MIN_IOU, polygon_iou

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WALKTHROUGH = ROOT / "notebooks" / "01-identify-pins.ipynb"
KERNEL = "pinid-test-python"

# Appended to the executed copy: the facts the test checks, read from the notebook's own variables.
REPORT_CELL = """
import json, sys
print(json.dumps({
    "executable": sys.executable,
    "identified": answer.matches[0].pin_id,
    "unknown": bool(answer.unknown),
    "placed": {pin_id: np.asarray(outline, dtype=float).tolist() for pin_id, outline in placed.items()},
    "found": [[f.match.pin_id, float(f.confidence), np.asarray(f.polygon, dtype=float).tolist()] for f in found],
    "photos": int(len(confidence)),
    "left_out": int((~known).sum()),
    "workdir": workdir.name,
}))
"""


def test_the_walkthrough_is_there() -> None:
    assert WALKTHROUGH in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}, cell {cell.get('id')}: outputs are committed; clear them before committing "
                "(Jupyter: Edit > Clear Outputs of All Cells, then save)")
    assert "widgets" not in notebook.metadata


def _python_kernel(jupyter_dir: Path) -> None:
    """A kernelspec that runs ipykernel in this interpreter (not whatever `python` a PATH or profile gives)."""
    folder = jupyter_dir / "kernels" / KERNEL
    folder.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "pinid tests", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")


def test_walkthrough_runs_and_shows_what_it_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient

    committed = WALKTHROUGH.read_bytes()
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("index", "local-index"))
    (tmp_path / "notebooks").mkdir()  # the notebook runs here, as Jupyter runs it in notebooks/
    _python_kernel(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # no GUI backend anywhere; the notebook's own %matplotlib inline still renders its figures (with Agg)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

    notebook = nbformat.read(WALKTHROUGH, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT_CELL))
    nbclient.NotebookClient(notebook, kernel_name=KERNEL, timeout=600,
                            resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()

    report = json.loads("".join(output["text"] for output in notebook.cells[-1].outputs
                                if output["output_type"] == "stream" and output["name"] == "stdout"))
    assert report["executable"] == sys.executable
    # the photo: the right pin, with confidence
    assert report["identified"] == "heart-gold" and not report["unknown"]
    # the board: every pin placed is found where it was placed, and nothing else
    placed = {pin_id: np.asarray(outline, np.float32) for pin_id, outline in report["placed"].items()}
    assert placed
    found = {pin_id: np.asarray(polygon, np.float32) for pin_id, _, polygon in report["found"]}
    assert set(found) == set(placed)
    for pin_id, outline in placed.items():
        assert polygon_iou(found[pin_id], outline) >= MIN_IOU, pin_id
    # the benchmark behind the reliability diagram has photos of pins left out of the answer
    assert report["photos"] == 60 and 0 < report["left_out"] < 60
    # every figure cell drew its figure
    figures = [cell for cell in notebook.cells if "figure" in cell.metadata.get("tags", [])]
    assert len(figures) == 4
    for cell in figures:
        assert any("image/png" in output.get("data", {}) for output in cell.outputs), cell.source[:80]
    # the temporary index is gone and the committed notebook untouched
    assert not Path(report["workdir"]).exists()
    assert WALKTHROUGH.read_bytes() == committed
