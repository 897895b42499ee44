"""The default model, as a new user runs it: the README's commands with no --model.

The real default architecture (``ViT-B-32-256``) with random weights is written
once per session into a Hugging Face cache laid out as a download leaves it,
under the repo open_clip names for the default tag. Then the console script
runs ``pinid build-index examples/catalogue`` and ``pinid identify
examples/photo.jpg`` -- offline, and online with every socket call failing (a
network use would show up in a log). About 600 MB of weights; well under two
minutes on two cores. Deselect with ``-m "not default_model"``; CI runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from pinid.encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED

from tests.encoder.hf_cache import add_snapshot

pytestmark = pytest.mark.default_model

ROOT = Path(__file__).resolve().parents[2]
PINID = Path(sys.executable).parent / "pinid"  # the console script `pip install` made

# Loaded before pinid by every Python started with this folder on PYTHONPATH: the network is
# unreachable, and each attempt to use it is written to $PINID_TEST_NETWORK_LOG.
_NO_NETWORK = textwrap.dedent("""
    import os, socket

    def _refuse(*args, **kwargs):
        with open(os.environ["PINID_TEST_NETWORK_LOG"], "a") as log:
            log.write(repr(args[:2]) + "\\n")
        raise OSError(101, "Network is unreachable")

    socket.getaddrinfo = _refuse
    socket.create_connection = _refuse
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
""")


@pytest.fixture(scope="session")
def default_model_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HF_HOME holding the default tag's repo: ViT-B-32-256 with seeded random weights, as a .bin."""
    import open_clip
    import torch

    tag_cfg = open_clip.get_pretrained_cfg(DEFAULT_MODEL, DEFAULT_PRETRAINED)
    repo, filename = os.path.split(tag_cfg["hf_hub"])
    home = tmp_path_factory.mktemp("hf-home")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = open_clip.create_model(DEFAULT_MODEL)  # no pretrained: random weights, never downloaded
    weights = home / "download.tmp"
    torch.save(model.state_dict(), weights)
    del model
    add_snapshot(home / "hub", repo, {filename or "open_clip_pytorch_model.bin": weights}, move=True)
    yield home
    shutil.rmtree(home, ignore_errors=True)  # 600 MB: not left for pytest's last three runs


def _environment(home: Path, offline: bool, tmp_path: Path) -> dict[str, str]:
    """A user's shell: HF_HOME set; offline mode on, or off with the network unreachable."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PINID_OFFLINE", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME", "PYTHONPATH")}
    env["HF_HOME"] = str(home)
    if offline:
        env["PINID_OFFLINE"] = "1"
    else:
        site = tmp_path / "no-network"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(_NO_NETWORK)
        env["PYTHONPATH"] = str(site)
        env["PINID_TEST_NETWORK_LOG"] = str(tmp_path / "network.log")
    return env


def _pinid(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(PINID), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "online-unreachable"])
def test_readme_commands_run_with_the_default_model(default_model_home: Path, tmp_path: Path,
                                                    offline: bool) -> None:
    assert PINID.is_file(), f"no console script at {PINID}: install with `pip install -e .`"
    assert (ROOT / "examples" / "catalogue").is_dir() and (ROOT / "examples" / "photo.jpg").is_file()
    index = tmp_path / "index"
    env = _environment(default_model_home, offline, tmp_path)
    if not offline:  # the guard works: a look-up fails and is logged
        probe = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('huggingface.co', 443)"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "Network is unreachable" in probe.stderr
        (tmp_path / "network.log").unlink()

    built = _pinid("build-index", "examples/catalogue", "-o", str(index), "-q", env=env)
    assert built.returncode == 0, built.stderr
    assert f"encoder {DEFAULT_MODEL} ({DEFAULT_PRETRAINED})" in built.stdout

    found = _pinid("identify", "examples/photo.jpg", "-i", str(index), "--json", env=env)
    assert found.returncode == 0, found.stderr
    (answer,) = json.loads(found.stdout)
    assert answer["error"] is None and answer["matches"][0]["pin_id"] == "heart-gold"

    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["encoder"]["model"] == DEFAULT_MODEL and manifest["encoder"]["pretrained"] == DEFAULT_PRETRAINED
    if not offline:  # the cache was found before any network use
        assert not (tmp_path / "network.log").exists()
