from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from pinid.encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED, Encoder, EncoderSpec, save_local_dir
from pinid.errors import InputError, WeightsUnavailableError

from tests.support import TINY_MODEL_CFG, corrupt_files, draw_pin_image


def test_local_dir_encoder_returns_unit_float32_vectors(tiny_encoder: Encoder) -> None:
    images = [draw_pin_image(seed) for seed in range(5)]
    result = tiny_encoder.encode_images(images, batch_size=2)
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (5, 32)
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.ok == [0, 1, 2, 3, 4] and result.failures == []
    # distinct images give distinct vectors
    similarity = result.vectors @ result.vectors.T
    assert similarity[0, 1] < 0.9999


def test_batching_and_threads_do_not_change_vectors(tiny_encoder: Encoder) -> None:
    images = [draw_pin_image(seed) for seed in range(7)]
    one_by_one = tiny_encoder.encode_images(images, batch_size=1, workers=1).vectors
    batched = tiny_encoder.encode_images(images, batch_size=32, workers=3).vectors
    assert np.allclose(one_by_one, batched, atol=1e-5)


def test_unreadable_images_are_reported_with_their_position(tiny_encoder: Encoder, tmp_path: Path) -> None:
    bad = corrupt_files(tmp_path)
    sources = [draw_pin_image(1), bad[0], draw_pin_image(2), bad[1], bad[2]]
    result = tiny_encoder.encode_images(sources, batch_size=2)
    assert result.ok == [0, 2]
    assert [position for position, _ in result.failures] == [1, 3, 4]
    assert result.vectors.shape == (2, 32)


def test_identity_records_weights_checksum_and_preprocessing(tiny_encoder: Encoder, tiny_model_dir: Path) -> None:
    identity = tiny_encoder.identity()
    assert identity["model"] == f"local-dir:{tiny_model_dir}"
    assert len(identity["weights_sha256"]) == 64
    assert identity["embedding_dim"] == 32
    assert identity["preprocess"]["size"] in (64, [64, 64])
    assert identity["preprocess"]["mean"] and identity["preprocess"]["std"]


def test_relative_local_dir_is_recorded_as_absolute(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_model_dir.parent)
    encoder = Encoder.load(f"local-dir:{tiny_model_dir.name}", device="cpu")
    assert encoder.spec.model == f"local-dir:{tiny_model_dir.resolve()}"


def test_local_dir_preprocessing_from_config_is_used(tmp_path: Path) -> None:
    folder = save_local_dir(tmp_path / "m", model_cfg=TINY_MODEL_CFG, random_weights=True)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["preprocess_cfg"]["mean"] = [0.5, 0.5, 0.5]
    config["preprocess_cfg"]["resize_mode"] = "squash"
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    encoder = Encoder.load(f"local-dir:{folder}", device="cpu")
    assert encoder.preprocess_cfg["mean"] == [0.5, 0.5, 0.5]
    assert encoder.preprocess_cfg["resize_mode"] == "squash"


def test_missing_local_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        Encoder.load(f"local-dir:{tmp_path / 'absent'}")


def test_local_dir_without_weights_never_falls_back_to_random(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", folder)
    with pytest.raises(WeightsUnavailableError, match="no weights file"):
        Encoder.load(f"local-dir:{folder}")


def test_corrupt_weights_file_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", folder)
    (folder / "open_clip_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsUnavailableError, match="cannot load"):
        Encoder.load(f"local-dir:{folder}")


def test_weights_of_another_architecture_are_rejected(other_model_dir: Path, tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", folder)
    shutil.copy(other_model_dir / "open_clip_model.safetensors", folder)
    with pytest.raises(WeightsUnavailableError, match="cannot load"):
        Encoder.load(f"local-dir:{folder}")


def test_builtin_model_without_weights_is_refused() -> None:
    with pytest.raises(WeightsUnavailableError, match="never runs with random weights"):
        Encoder.load(DEFAULT_MODEL, pretrained=None)


def test_unknown_tag_lists_known_tags() -> None:
    with pytest.raises(WeightsUnavailableError, match=DEFAULT_PRETRAINED):
        Encoder.load(DEFAULT_MODEL, pretrained="no_such_tag")


def test_unknown_model_name_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown open_clip model"):
        Encoder.load("ViT-Nope-1", pretrained="x")


def test_uncached_default_weights_fail_fast_offline(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as caught:
        Encoder.load(cache_dir=str(tmp_path), offline=True)
    message = str(caught.value)
    assert DEFAULT_MODEL in message and DEFAULT_PRETRAINED in message and "local-dir:" in message
    assert "\n" not in message
    assert time.monotonic() - started < 10


def test_unreachable_hub_fails_fast_when_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)  # the reachability check resolves the host itself
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        Encoder.load(cache_dir=str(tmp_path), offline=False)
    with pytest.raises(WeightsUnavailableError, match="cannot be reached"):
        Encoder.load("hf-hub:someone/some-model", cache_dir=str(tmp_path), offline=False)


def test_hf_hub_model_loads_from_local_cache_offline(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The layout huggingface_hub uses for a downloaded repo.
    repo = tmp_path / "models--pinid--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        shutil.copy(tiny_model_dir / name, snapshot / name)
    encoder = Encoder.load("hf-hub:pinid/tiny", cache_dir=str(tmp_path), offline=True, device="cpu")
    reference = Encoder.load(f"local-dir:{tiny_model_dir}", device="cpu")
    assert encoder.spec == EncoderSpec("hf-hub:pinid/tiny")
    assert encoder.weights_sha256 == reference.weights_sha256
    image = [draw_pin_image(3)]
    assert np.allclose(encoder.encode_images(image).vectors, reference.encode_images(image).vectors)


def test_builtin_architecture_with_a_weights_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    import open_clip

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "pinid-test-tiny.json").write_text(json.dumps(TINY_MODEL_CFG))
    open_clip.add_model_config(configs)
    weights = tiny_model_dir / "open_clip_model.safetensors"
    encoder = Encoder.load("pinid-test-tiny", pretrained=str(weights), device="cpu")
    assert encoder.spec.describe() == f"pinid-test-tiny ({weights})"
    assert encoder.embedding_dim == 32


def test_bad_batch_size_is_rejected(tiny_encoder: Encoder) -> None:
    with pytest.raises(InputError):
        tiny_encoder.encode_images([draw_pin_image(1)], batch_size=0)


@pytest.mark.real_weights
@pytest.mark.skipif(os.environ.get("PINID_REAL_WEIGHTS") != "1", reason="set PINID_REAL_WEIGHTS=1 with weights cached")
def test_default_pretrained_model_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINID_OFFLINE")
    encoder = Encoder.load()
    vectors = encoder.encode_images([draw_pin_image(1), draw_pin_image(1)]).vectors
    assert vectors.shape == (2, 512) and float(vectors[0] @ vectors[1]) > 0.999


def test_weights_digest_survives_export_to_another_folder(tiny_encoder: Encoder, tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    exported = save_local_dir(tmp_path / "exported", f"local-dir:{tiny_model_dir}")
    copy = Encoder.load(f"local-dir:{exported}", device="cpu")
    assert copy.weights_sha256 == tiny_encoder.weights_sha256
    assert copy.identity()["preprocess"] == tiny_encoder.identity()["preprocess"]
