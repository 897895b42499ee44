"""`pinid build-index --ray` and `pinid dedup --ray` as a user types them, and their bad input.

In-process runs reuse the tests' Ray instance (a session already open is kept);
the subprocess runs connect to it with ``--ray auto``, as a user connects to a
cluster started with ``ray start --head``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import run

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_cluster")


def _pinid(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    pinid = Path(sys.executable).with_name("pinid")
    env = {**os.environ, "PINID_OFFLINE": "1"}
    return subprocess.run([str(pinid), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def _readme_ray_commands() -> list[str]:
    """The commands of the first code block of the README's Ray section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Beyond one machine: Ray.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_ray_commands_run_as_typed(tmp_path: Path) -> None:
    install, build, dedup = _readme_ray_commands()
    assert install == 'pip install -e ".[ray]"'  # what CI's `pip install -e .[dev]` includes
    assert build == "pinid build-index examples/catalogue -o examples/index --encoder local --ray"
    assert dedup == "pinid dedup examples/catalogue --mode pin --encoder local --ray"
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("index"))
    done = _pinid(*build.split()[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Built examples/index: 5 pins, 5 images" in done.stdout
    assert (tmp_path / "examples" / "pinid-build-cache").is_dir()  # beside the index: what a rerun resumes from
    answer = _pinid("identify", "examples/photo.jpg", "-i", "examples/index", cwd=tmp_path)
    assert answer.returncode == 0, answer.stderr
    assert "Red Heart (heart-gold), confidence >99%" in answer.stdout  # as without Ray (README)
    grouped = _pinid(*dedup.split()[1:], cwd=tmp_path)
    assert grouped.returncode == 0, grouped.stderr
    rows = list(csv.DictReader(io.StringIO(grouped.stdout)))
    assert sorted(row["listing_id"] for row in rows) == sorted(
        str(path.relative_to(tmp_path / "examples" / "catalogue"))
        for path in (tmp_path / "examples" / "catalogue").rglob("*.png"))
    assert all(row["reason"] in ("unique", "representative", "same_pin") for row in rows)


def test_dedup_with_ray_as_typed(tiny_bench: Path, tmp_path: Path) -> None:
    """`--ray=auto` joins the running instance (here the tests'), as after `ray start --head`."""
    done = _pinid("dedup", tiny_bench / "listings.csv", "--mode", "pin", "--encoder", "local", "-o",
                  tmp_path / "groups.csv", "--ray=auto", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "groups.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len((tiny_bench / "listings.csv").read_text().splitlines()) - 1
    assert any(int(row["group_size"]) > 1 for row in rows)
    assert (tmp_path / "pinid-dedup-cache").is_dir()


@pytest.mark.parametrize("args, message", [
    (["--ray-workers", "2"], "--ray-workers and --ray-gpus need --ray"),
    (["--ray", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--encoder", "local", "--ray-gpus", "1", "--ray"], "--ray-gpus is for CLIP encoding"),
])
def test_bad_ray_arguments_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    """In a process of its own: the tests' Ray session must not stand in for the address given."""
    done = _pinid("build-index", REPO / "examples" / "catalogue", "-o", tmp_path / "idx", *args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "idx").exists() and not (tmp_path / "pinid-build-cache").exists()


def test_a_path_taken_as_the_address_is_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    listings = tmp_path / "listings"
    listings.mkdir()
    code, _, err = run(capsys, "dedup", listings, "--ray", listings)
    assert code == 2 and "took" in err and "--ray=ADDRESS" in err


def test_without_ray_installed_the_error_says_how(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    code, _, err = run(capsys, "build-index", REPO / "examples" / "catalogue", "-o", tmp_path / "idx",
                       "--encoder", "local", "--ray")
    assert code == 2 and "pip install 'pinid[ray]'" in err
