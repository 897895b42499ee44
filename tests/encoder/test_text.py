"""The text side of the encoder: loaded lazily and once, in the image vectors' space."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pinid.encoder.clip as clip_module
from pinid.encoder import Encoder, save_local_dir
from pinid.errors import EncoderMismatchError, InputError, WeightsUnavailableError

from tests.support import TINY_MODEL_CFG, draw_pin_image


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    """A fresh encoder (not the session's tiny_encoder, whose text tower other tests expect unloaded)."""
    return Encoder.load(f"local-dir:{tiny_model_dir}", device="cpu", offline=True)


@pytest.fixture
def create_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the models pinid.encoder.clip creates (each call appends 1)."""
    calls: list[int] = []
    real = clip_module.create_clip

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        time.sleep(0.05)  # widen the window in which concurrent first calls could both load
        return real(*args, **kwargs)

    monkeypatch.setattr(clip_module, "create_clip", counting)
    return calls


def test_text_vectors_are_unit_and_share_the_image_space(encoder: Encoder) -> None:
    texts = ["gold fox with a red rim", "blue whale", "a pin"]
    vectors = encoder.encode_texts(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (3, encoder.embedding_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    images = encoder.encode_images([draw_pin_image(1)]).vectors
    assert (vectors @ images.T).shape == (3, 1)  # same dimension: text against image cosines
    assert not np.allclose(vectors[0], vectors[1])
    assert np.allclose(encoder.encode_texts("blue whale"), vectors[1:2], atol=1e-6)  # one string is one text
    assert np.allclose(encoder.encode_texts(texts, batch_size=1), vectors, atol=1e-5)


def test_text_vectors_equal_open_clips_own_encode_text(encoder: Encoder, tiny_model_dir: Path) -> None:
    import open_clip
    import torch

    name = f"local-dir:{tiny_model_dir}"
    model, _, _ = open_clip.create_model_and_transforms(name)
    texts = ["gold fox with a red rim", "enamel cat"]
    with torch.inference_mode():
        expected = model.eval().encode_text(open_clip.get_tokenizer(name)(texts), normalize=True).numpy()
    assert np.allclose(encoder.encode_texts(texts), expected, atol=1e-5)


def test_text_tower_is_loaded_only_by_the_first_text_query(tiny_model_dir: Path, create_calls: list[int]) -> None:
    fresh = Encoder.load(f"local-dir:{tiny_model_dir}", device="cpu")
    assert len(create_calls) == 1 and not fresh.text_loaded
    fresh.encode_images([draw_pin_image(3)])
    assert len(create_calls) == 1 and not fresh.text_loaded
    with pytest.raises(InputError):
        fresh.encode_texts([""])  # a rejected query loads nothing
    assert len(create_calls) == 1 and not fresh.text_loaded
    first = fresh.encode_texts(["gold fox"])
    assert len(create_calls) == 2 and fresh.text_loaded
    assert np.array_equal(fresh.encode_texts(["gold fox"]), first)
    assert len(create_calls) == 2


def test_concurrent_first_text_queries_load_the_tower_once(tiny_model_dir: Path, create_calls: list[int]) -> None:
    fresh = Encoder.load(f"local-dir:{tiny_model_dir}", device="cpu")
    start = threading.Barrier(4)
    results: list[np.ndarray] = []

    def query() -> None:
        start.wait()
        results.append(fresh.encode_texts(["gold fox with a red rim"]))

    threads = [threading.Thread(target=query) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(create_calls) == 2  # the image tower's load, then the text tower's, once
    assert len(results) == 4 and all(np.array_equal(r, results[0]) for r in results)


@pytest.mark.parametrize("bad", ["", "   \n\t", None, 42])
def test_empty_or_non_text_query_is_input_error(encoder: Encoder, bad: Any) -> None:
    with pytest.raises(InputError, match="empty|must be a string"):
        encoder.encode_texts([bad])


def test_text_longer_than_the_context_is_truncated(encoder: Encoder) -> None:
    long = " ".join(["gold fox with a red rim"] * 10)  # far over the tiny model's 16 tokens
    vectors = encoder.encode_texts([long, long + " and a silver moon"])
    assert vectors.shape == (2, encoder.embedding_dim)
    assert np.allclose(vectors[0], vectors[1], atol=1e-6)  # the words past the context are dropped


def test_model_whose_text_vocabulary_misses_the_tokenizers_ids_is_a_clear_error(tmp_path: Path) -> None:
    config = copy.deepcopy(TINY_MODEL_CFG)
    config["text_cfg"]["vocab_size"] = 128
    folder = save_local_dir(tmp_path / "small-vocab", model_cfg=config, random_weights=True)
    small = Encoder.load(f"local-dir:{folder}", device="cpu")
    with pytest.raises(WeightsUnavailableError, match="cannot search by text"):
        small.encode_texts(["gold fox"])
    assert not small.text_loaded


def test_weights_changed_on_disk_after_load_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = save_local_dir(tmp_path / "m", model_cfg=TINY_MODEL_CFG, random_weights=True)
    loaded = Encoder.load(f"local-dir:{folder}", device="cpu")
    weights = folder / "open_clip_model.safetensors"
    state = load_file(str(weights))
    state["visual.proj"] = state["visual.proj"] + 1.0
    save_file(state, str(weights))
    with pytest.raises(EncoderMismatchError, match="changed since this encoder was loaded"):
        loaded.encode_texts(["gold fox"])
