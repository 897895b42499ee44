"""Weights by pretrained tag, from a Hugging Face cache laid out as a download leaves it.

A tiny architecture and its tags are registered in open_clip's registry for
each test only (monkeypatch undoes it), so the tag path -- the default model's
path -- runs here in a second, offline and with the hub unreachable. Nothing
here touches the network: the socket functions fail the test if called.
"""

from __future__ import annotations

import json
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pinid.encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED, Encoder, save_local_dir
from pinid.encoder import weights as weights_module
from pinid.errors import WeightsUnavailableError

from tests.encoder.hf_cache import REVISION, add_snapshot, repo_folder
from tests.support import TINY_MODEL_CFG, draw_pin_image, run

MODEL = "pinid-hf-tiny"
TAG = "tiny_s1"
REPO = "pinid-test/tiny-clip"
BIN = "open_clip_pytorch_model.bin"
SAFETENSORS = "open_clip_model.safetensors"


@dataclass
class TinyHub:
    """A registered tiny architecture whose tag points at a repo in a fresh hub cache."""

    hub: Path  # HF_HOME/hub
    weights: Path  # the same weights outside the cache (a torch.save'd state dict)
    monkeypatch: pytest.MonkeyPatch

    def register(self, tag: str = TAG, **tag_cfg: Any) -> None:
        """Add ``tag`` to the tiny model's tags in open_clip's registry (until the test ends)."""
        import open_clip.pretrained as pretrained

        tags = pretrained._PRETRAINED.setdefault(MODEL, {})
        self.monkeypatch.setitem(tags, tag, pretrained._pcfg(**{"hf_hub": f"{REPO}/", **tag_cfg}))

    def cache(self, files: dict[str, Path] | None = None, revision: str = REVISION) -> Path:
        """Put the weights into the cache as ``REPO`` at ``revision``; returns the snapshot folder."""
        return add_snapshot(self.hub, REPO, files or {BIN: self.weights}, revision=revision)


def _save_tiny_weights(path: Path, seed: int = 0) -> Path:
    """Random tiny weights saved as open_clip's .bin files are: torch.save of the state dict."""
    import open_clip
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_MODEL_CFG)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def tiny_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinyHub:
    import open_clip.factory as factory
    import open_clip.pretrained as pretrained
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))  # read at import: follow HF_HOME here
    monkeypatch.setitem(factory._MODEL_CONFIGS, MODEL, json.loads(json.dumps(TINY_MODEL_CFG)))
    monkeypatch.setitem(pretrained._PRETRAINED, MODEL, {})
    return TinyHub(home / "hub", _save_tiny_weights(tmp_path / "tiny.bin"), monkeypatch)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Online mode, but any network use is recorded and fails (the hub is unreachable)."""
    return _unreachable_network(monkeypatch)


def _unreachable_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    touched: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        touched.append(repr(args[:2]))
        raise OSError("network is unreachable (test)")

    monkeypatch.delenv("PINID_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return touched


def _vectors(encoder: Encoder) -> np.ndarray:
    return encoder.encode_images([draw_pin_image(1), draw_pin_image(2)]).vectors


def _uses_quick_gelu(encoder: Encoder) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(part, QuickGELU) for part in encoder._visual.modules())


# ----------------------------------------------------------------- the cache layout
def test_the_fake_cache_is_what_huggingface_hub_reads(tiny_hub: TinyHub) -> None:
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    snapshot = tiny_hub.cache()
    assert try_to_load_from_cache(repo_id=REPO, filename=BIN) == str(snapshot / BIN)
    assert (snapshot / BIN).is_symlink() and not Path(str((snapshot / BIN).readlink())).is_absolute()
    report = scan_cache_dir(tiny_hub.hub)
    assert report.warnings == []
    (repo,) = report.repos
    (revision,) = repo.revisions
    assert repo.repo_id == REPO and revision.commit_hash == REVISION and revision.refs == frozenset({"main"})
    (cached,) = revision.files
    assert cached.file_name == BIN and cached.blob_path.parent == repo_folder(tiny_hub.hub, REPO) / "blobs"


# ----------------------------------------------------------------- loading by tag
@pytest.mark.parametrize("filename", [BIN, SAFETENSORS])
def test_a_tag_loads_from_the_hub_cache_offline(tiny_hub: TinyHub, filename: str, tmp_path: Path) -> None:
    tiny_hub.register(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation="bilinear", resize_mode="squash")
    file = tiny_hub.weights
    if filename == SAFETENSORS:
        import torch
        from safetensors.torch import save_file

        file = tmp_path / SAFETENSORS
        save_file(torch.load(tiny_hub.weights, weights_only=True), str(file))
    tiny_hub.cache({filename: file})

    encoder = Encoder.load(MODEL, TAG, device="cpu")

    assert encoder.spec.describe() == f"{MODEL} ({TAG})"
    # the tag's own preprocessing is used, not the architecture's defaults
    assert encoder.preprocess_cfg["mean"] == [0.5, 0.5, 0.5] and encoder.preprocess_cfg["std"] == [0.25] * 3
    assert encoder.preprocess_cfg["interpolation"] == "bilinear"
    assert encoder.preprocess_cfg["resize_mode"] == "squash"
    same_file = Encoder.load(MODEL, str(tiny_hub.weights), device="cpu")
    assert encoder.weights_sha256 == same_file.weights_sha256


def test_a_tag_loads_from_the_hub_cache_when_the_hub_is_unreachable(tiny_hub: TinyHub,
                                                                    no_network: list[str]) -> None:
    tiny_hub.register()
    tiny_hub.cache()
    encoder = Encoder.load(MODEL, TAG, device="cpu")
    assert encoder.embedding_dim == 32
    assert no_network == []  # the cache is read before any network use


@pytest.mark.parametrize("typed", ["tiny_s1", "Tiny-S1"])
def test_every_tag_form_loads(tiny_hub: TinyHub, typed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              no_network: list[str]) -> None:
    # "org/repo/" (the default file name), "org/repo/file.bin", and a tag with only a URL
    tiny_hub.register(TAG)
    tiny_hub.register("custom_file", hf_hub=f"{REPO}/tiny-weights.bin")
    tiny_hub.register("by_url", hf_hub="", url="https://example.invalid/models/tiny-by-url.pt")
    tiny_hub.cache({BIN: tiny_hub.weights, "tiny-weights.bin": tiny_hub.weights})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # open_clip's URL cache: ~/.cache/clip
    (tmp_path / "home" / ".cache" / "clip").mkdir(parents=True)
    shutil.copy(tiny_hub.weights, tmp_path / "home" / ".cache" / "clip" / "tiny-by-url.pt")

    digests = {Encoder.load(MODEL, tag, device="cpu").weights_sha256
               for tag in (typed, "custom_file", "by_url")}
    assert len(digests) == 1 and no_network == []


# ----------------------------------------------------------------- the CLI with a tag
def test_cli_builds_identifies_and_exports_with_a_tag(tiny_hub: TinyHub, make_catalogue, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture, umask_022: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_hub.register()
    tiny_hub.cache()
    catalogue = make_catalogue(pins=3)
    photo = catalogue / "pin-001" / "img0.png"
    code, out, err = run(capsys, "build-index", catalogue, "-o", tmp_path / "idx", "--model", MODEL,
                         "--pretrained", TAG)
    assert code == 0, err
    assert f"encoder {MODEL} ({TAG})" in out
    code, out, err = run(capsys, "identify", photo, "-i", tmp_path / "idx", "--json", "-k", "1")
    assert code == 0, err
    assert json.loads(out)[0]["matches"][0]["pin_id"] == "pin-001"

    code, out, err = run(capsys, "export-model", MODEL, "--pretrained", TAG, "-o", tmp_path / "exported")
    assert code == 0 and f"local-dir:{(tmp_path / 'exported').resolve()}" in out, err
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        assert stat.S_IMODE((tmp_path / "exported" / name).stat().st_mode) == 0o644, name
    code, out, err = run(capsys, "identify", photo, "-i", tmp_path / "idx", "--model",
                         f"local-dir:{tmp_path / 'exported'}", "--json", "-k", "1")
    assert code == 0, err  # the exported copy is the same encoder: weights and preprocessing
    assert json.loads(out)[0]["matches"][0]["pin_id"] == "pin-001"

    # online, hub unreachable: the index's own encoder still loads from the cache
    touched = _unreachable_network(monkeypatch)
    code, out, err = run(capsys, "identify", photo, "-i", tmp_path / "idx", "--json", "-k", "1")
    assert code == 0 and touched == [], err


# ----------------------------------------------------------------- export keeps every setting
def test_export_keeps_quick_gelu_and_the_identity_tells_activations_apart(
        tiny_hub: TinyHub, make_catalogue, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_hub.register(quick_gelu=True, mean=(0.5, 0.5, 0.5))  # like ViT-B-32 openai
    tiny_hub.cache()
    tagged = Encoder.load(MODEL, TAG, device="cpu")
    assert _uses_quick_gelu(tagged)

    folder = save_local_dir(tmp_path / "exported", MODEL, TAG)
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"]["quick_gelu"] is True
    assert config["preprocess_cfg"]["mean"] == [0.5, 0.5, 0.5]
    exported = Encoder.load(f"local-dir:{folder}", device="cpu")
    assert _uses_quick_gelu(exported)
    assert exported.identity()["weights_sha256"] == tagged.identity()["weights_sha256"]
    assert exported.identity()["preprocess"] == tagged.identity()["preprocess"]
    assert np.allclose(_vectors(exported), _vectors(tagged), atol=1e-6)

    # the same tensors with GELU compute another function: another identity
    plain = Encoder.load(MODEL, str(tiny_hub.weights), device="cpu")
    assert not _uses_quick_gelu(plain)
    assert plain.weights_sha256 != tagged.weights_sha256
    assert not np.allclose(_vectors(plain), _vectors(tagged), atol=1e-4)

    catalogue = make_catalogue(pins=2)
    code, _, err = run(capsys, "build-index", catalogue, "-o", tmp_path / "idx", "--model", MODEL,
                       "--pretrained", TAG)
    assert code == 0, err
    code, _, err = run(capsys, "identify", catalogue / "pin-000" / "img0.png", "-i", tmp_path / "idx",
                       "--model", MODEL, "--pretrained", str(tiny_hub.weights))
    assert code == 6 and "different weights" in err


def test_export_to_a_file_is_an_input_error(tiny_model_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a-file").write_text("mine")
    for target in (tmp_path / "a-file", tmp_path / "a-file" / "inside"):
        code, out, err = run(capsys, "export-model", f"local-dir:{tiny_model_dir}", "-o", target)
        assert code == 2 and err.startswith("pinid: error: ") and err.count("\n") == 1, err
    assert (tmp_path / "a-file").read_text() == "mine"


def test_export_never_writes_into_a_folder_of_other_files_and_replaces_its_own(
        tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    code, _, err = run(capsys, "export-model", f"local-dir:{tiny_model_dir}", "-o", photos)
    assert code == 2 and "holds other files" in err and err.count("\n") == 1
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]
    code, _, err = run(capsys, "export-model", f"local-dir:{tiny_model_dir}", "-o", "")
    assert code == 2 and err.count("\n") == 1
    target = tmp_path / "exported"
    for _ in range(2):  # a second export replaces the first, whole
        code, _, err = run(capsys, "export-model", f"local-dir:{tiny_model_dir}", "-o", target)
        assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exported.tmp")]


# ----------------------------------------------------------------- missing weights: one clear line
def test_offline_error_names_model_tag_repo_cache_folder_and_the_export_command(
        tiny_hub: TinyHub, make_catalogue, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_hub.register()  # the tag is known, its repo is not cached
    code, _, err = run(capsys, "build-index", make_catalogue(pins=1), "-o", tmp_path / "idx", "--model", MODEL,
                       "--pretrained", TAG)
    assert code == 7 and err.count("\n") == 1 and err.startswith("pinid: error: ")
    assert MODEL in err and TAG in err and REPO in err and "offline" in err
    assert str(repo_folder(tiny_hub.hub, REPO)) in err
    assert f"`pinid export-model {MODEL} --pretrained {TAG} -o {MODEL}-{TAG}`" in err
    assert f"--model local-dir:{MODEL}-{TAG}" in err
    assert "MODEL" not in err and "TAG" not in err


def test_offline_error_for_the_default_model_names_its_repo(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as caught:
        Encoder.load(cache_dir=str(tmp_path), offline=True)
    message = str(caught.value)
    assert "laion/CLIP-ViT-B-32-256x256-DataComp-s34B-b86K" in message
    assert str(tmp_path / "models--laion--CLIP-ViT-B-32-256x256-DataComp-s34B-b86K") in message
    assert f"pinid export-model {DEFAULT_MODEL} --pretrained {DEFAULT_PRETRAINED} -o " in message


def test_hub_reachability_check_is_bounded_when_dns_hangs(tiny_hub: TinyHub,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_hub.register()
    monkeypatch.delenv("PINID_OFFLINE")
    monkeypatch.setattr(weights_module, "NETWORK_TIMEOUT_S", 0.5)

    def hanging_resolver(*args: Any, **kwargs: Any) -> Any:
        time.sleep(4)  # a resolver that does not answer
        raise OSError("timed out")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_resolver)
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        Encoder.load(MODEL, TAG)
    assert time.monotonic() - started < 2.5
    message = str(caught.value)
    assert "cannot be reached" in message and "DNS" in message and REPO in message
    assert f"pinid export-model {MODEL} --pretrained {TAG} -o " in message


def test_hub_reachability_check_reports_a_refused_connection(tiny_hub: TinyHub,
                                                             no_network: list[str]) -> None:
    tiny_hub.register()
    with pytest.raises(WeightsUnavailableError, match="huggingface.co cannot be reached.*unreachable"):
        Encoder.load(MODEL, TAG)
    assert no_network  # it did try, once, and gave up at once


# ----------------------------------------------------------------- recorded paths
def test_an_index_built_from_a_cache_file_survives_a_cache_update(
        tiny_hub: TinyHub, make_catalogue, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old_snapshot = tiny_hub.cache()
    catalogue = make_catalogue(pins=2)
    photo = catalogue / "pin-000" / "img0.png"
    code, _, err = run(capsys, "build-index", catalogue, "-o", tmp_path / "idx", "--model", MODEL,
                       "--pretrained", old_snapshot / BIN)
    assert code == 0, err

    # the repo is updated to a new revision with the same file; the old snapshot goes
    new_snapshot = tiny_hub.cache(revision="f" * 40)
    shutil.rmtree(old_snapshot)
    code, out, err = run(capsys, "identify", photo, "-i", tmp_path / "idx", "--json", "-k", "1")
    assert code == 0, err
    assert json.loads(out)[0]["matches"][0]["pin_id"] == "pin-000"

    # a revision with other weights is not taken for the same encoder
    tiny_hub.cache({BIN: _save_tiny_weights(tmp_path / "other.bin", seed=1)}, revision="e" * 40)
    shutil.rmtree(new_snapshot)
    code, _, err = run(capsys, "identify", photo, "-i", tmp_path / "idx")
    assert code == 6 and "different weights" in err


def test_a_relative_weights_file_is_recorded_as_absolute(tiny_hub: TinyHub,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_hub.weights.parent)
    encoder = Encoder.load(MODEL, tiny_hub.weights.name, device="cpu")
    assert encoder.spec.pretrained == str(tiny_hub.weights)
    assert encoder.identity()["pretrained"] == str(tiny_hub.weights)
