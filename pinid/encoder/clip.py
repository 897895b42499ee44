"""The open_clip image encoder: batched, prefetched encoding with the weights' own preprocessing.

The text tower (for text search) is loaded only when first asked for, from the
same weights file, and lands in the same space as the image vectors.

Weights and preprocessing travel together: the preprocessing that belongs to
the weights (size, mean/std, resize mode) is always the one used, and it is
recorded in every index so a query is never encoded differently from the
catalogue.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import EncoderMismatchError, ImageError, InputError, WeightsUnavailableError
from ..images import ImageSource, load_image
from .weights import (DEFAULT_MODEL, DEFAULT_PRETRAINED, EncoderSpec, create_clip, jsonable, recorded_spec,
                      resolve_weights, uses_quick_gelu)
from .weights import ResolvedWeights

def weights_digest(module: Any) -> str:
    """sha256 over the image tower's tensors (names, shapes, values), and its activation.

    It identifies the weights, not the file: the same weights exported from a
    .bin to a safetensors folder keep their digest, so an index built online
    can be queried offline with the exported copy. QuickGELU (OpenAI-trained
    weights) is part of it because no tensor records it and it changes every
    vector; the usual GELU adds nothing, so digests of other models are as before.
    """
    import torch

    digest = hashlib.sha256()
    if uses_quick_gelu(module):
        digest.update(b"activation:quick_gelu;")
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        if data.numel():
            digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return device


@dataclass(frozen=True)
class EncodeResult:
    """Vectors for the images that could be read, and why the others could not."""

    vectors: np.ndarray  # (len(ok), d) float32, L2-normalised
    ok: list[int]  # positions in the input that produced a vector, ascending
    failures: list[tuple[int, str]]  # (position in the input, a few words why: ImageError.reason)


class Encoder:
    """An open_clip image tower with its own preprocessing.

    Build one with :meth:`Encoder.load`; it is safe to reuse for many calls.
    """

    def __init__(self, spec: EncoderSpec, visual: Any, preprocess: Callable, preprocess_cfg: dict,
                 embedding_dim: int, weights_sha256: str, device: str, *,
                 resolved: ResolvedWeights | None = None) -> None:
        self.spec = spec
        self.embedding_dim = embedding_dim
        self.weights_sha256 = weights_sha256
        self.preprocess_cfg = preprocess_cfg
        self.device = device
        self._visual = visual
        self._preprocess = preprocess
        size = preprocess_cfg.get("size", 224)
        self.image_size = int(max(size) if isinstance(size, (list, tuple)) else size)
        # The text side, loaded on first use by encode_texts (from the weights resolved at load).
        self._resolved = resolved
        self._text_lock = threading.Lock()
        self._text: _TextTower | None = None

    @classmethod
    def load(cls, model: str | EncoderSpec = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
             *, device: str = "auto", offline: bool | None = None, cache_dir: str | None = None) -> "Encoder":
        """Load weights from the local cache, a file or a folder; download only if online.

        ``offline`` (default: the ``PINID_OFFLINE`` or ``HF_HUB_OFFLINE`` environment
        variable) forbids any network access.
        """
        spec = recorded_spec(model if isinstance(model, EncoderSpec) else EncoderSpec(model, pretrained))
        resolved = resolve_weights(spec, offline=offline, cache_dir=cache_dir)
        device = _pick_device(device)
        import open_clip

        clip, preprocess = create_clip(spec, resolved, device)
        visual = clip.visual.eval()
        preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(clip))
        embedding_dim = int(getattr(visual, "output_dim", 0) or clip.text_projection.shape[1])
        del clip  # keep only the image tower: the text tower is a third of the memory
        return cls(spec, visual, preprocess, jsonable(preprocess_cfg), embedding_dim,
                   weights_digest(visual), device, resolved=resolved)

    def identity(self) -> dict[str, Any]:
        """What an index records so that it is only ever queried with the same encoder."""
        return {
            "model": self.spec.model,
            "pretrained": self.spec.pretrained,
            "weights_sha256": self.weights_sha256,
            "embedding_dim": self.embedding_dim,
            "preprocess": self.preprocess_cfg,
        }

    def preprocess(self, source: ImageSource) -> Any:
        """Decode and preprocess one image into the model's input tensor."""
        return self._preprocess(load_image(source, min_side=self.image_size))

    def encode_tensors(self, batch: Any) -> np.ndarray:
        """Forward a ready (n, 3, H, W) batch; returns L2-normalised float32 (n, d)."""
        import torch

        with torch.inference_mode():
            features = self._visual(batch.to(self.device))
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)

    def encode_images(self, sources: Sequence[ImageSource], *, batch_size: int = 32, workers: int = 2,
                      on_progress: Callable[[int], None] | None = None) -> EncodeResult:
        """Encode many images; unreadable ones are reported in ``failures``, never fatal.

        Decoding and preprocessing run in ``workers`` threads, ahead of the model
        (reader -> model -> writer), so the CPU spends its time in the forward pass.
        """
        import torch

        if batch_size < 1:
            raise InputError("batch size must be at least 1")
        vectors = np.empty((len(sources), self.embedding_dim), dtype=np.float32)
        ok: list[int] = []
        failures: list[tuple[int, str]] = []
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pinid-decode") as pool:
            for positions, tensors, errors in _prefetched_batches(pool, self._preprocess_or_error,
                                                                 sources, batch_size):
                failures.extend(errors)
                if tensors:
                    vectors[positions] = self.encode_tensors(torch.stack(tensors))
                    ok.extend(positions)
                if on_progress is not None:
                    on_progress(len(positions) + len(errors))
        ok.sort()
        return EncodeResult(vectors[ok], ok, sorted(failures))

    @property
    def text_loaded(self) -> bool:
        """Whether the text tower is in memory (only after the first :meth:`encode_texts`)."""
        return self._text is not None

    def encode_texts(self, texts: str | Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Encode text queries into the image vectors' space; returns L2-normalised float32 (n, d).

        The text tower is loaded on the first call, once even under concurrent
        calls (the image tower alone is kept otherwise: the text side is a third of
        the memory). A text longer than the tokenizer's context is truncated, as
        open_clip does. A single string is one text.

        Raises:
            InputError: a text is empty or only spaces, or not a string.
            WeightsUnavailableError: the weights or the tokenizer cannot be loaded.
            EncoderMismatchError: the model's text and image towers do not share one space, or the
                weights on disk are no longer those this encoder was loaded from.
        """
        batch = [check_text_query(text) for text in ([texts] if isinstance(texts, str) else texts)]
        if batch_size < 1:
            raise InputError("batch size must be at least 1")
        text = self._load_text_tower()
        vectors = np.empty((len(batch), self.embedding_dim), dtype=np.float32)
        for start in range(0, len(batch), batch_size):
            features = text.encode(batch[start:start + batch_size], self.device)
            vectors[start:start + len(features)] = features
        return vectors

    def _load_text_tower(self) -> "_TextTower":
        """Re-create the model from the same resolved weights and keep its text side only."""
        text = self._text
        if text is not None:
            return text
        with self._text_lock:
            if self._text is not None:  # another thread loaded it while this one waited
                return self._text
            import open_clip

            resolved = self._resolved or resolve_weights(self.spec)
            clip, _ = create_clip(self.spec, resolved, self.device)
            if weights_digest(clip.visual) != self.weights_sha256:
                raise EncoderMismatchError(
                    f"the weights of {self.spec.describe()} at {resolved.checkpoint} changed since this encoder "
                    "was loaded; load the encoder again")
            del clip.visual  # the text side stays: token embedding, transformer, ln_final, projection, mask
            clip.eval()
            tower = getattr(clip, "text", clip)  # CustomTextCLIP keeps its text tower in .text
            try:
                tokenizer = open_clip.get_tokenizer(resolved.open_clip_name,
                                                    context_length=getattr(tower, "context_length", None))
            except Exception as exc:  # open_clip/transformers raise many types for a missing tokenizer
                first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise WeightsUnavailableError(
                    f"cannot load the tokenizer of {self.spec.describe()}: {first_line}") from exc
            vocab = getattr(tower, "vocab_size", None)
            text = _TextTower(clip, tokenizer, int(vocab) if vocab else None, self.spec.describe())
            dim = text.encode(["a pin"], self.device).shape[1]
            if dim != self.embedding_dim:
                raise EncoderMismatchError(
                    f"the text tower of {self.spec.describe()} gives {dim}-dimensional vectors and the image "
                    f"tower {self.embedding_dim}: they do not share one space, so text search is not possible")
            self._text = text
            return text

    def _preprocess_or_error(self, source: ImageSource) -> Any:

        try:
            return self.preprocess(source)
        except ImageError as exc:
            return exc


@dataclass(frozen=True)
class _TextTower:
    """open_clip's model without its image tower, with the tokenizer made for it."""

    model: Any
    tokenizer: Callable
    vocab: int | None  # token ids the embedding has (None: not known)
    name: str

    def encode(self, texts: list[str], device: str) -> np.ndarray:
        import torch

        tokens = self.tokenizer(texts)  # truncated to the context length, as open_clip does
        if self.vocab is not None and texts and int(tokens.max()) >= self.vocab:
            raise WeightsUnavailableError(
                f"the text tower of {self.name} has {self.vocab} tokens but its tokenizer gives token "
                f"{int(tokens.max())}: this model cannot search by text")
        with torch.inference_mode():
            features = self.model.encode_text(tokens.to(device))
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)


def check_text_query(text: Any) -> str:
    """A text query as given, or ``InputError`` if it is not a string or has no words."""
    if not isinstance(text, str):
        raise InputError(f"a text query must be a string, not {type(text).__name__}")
    if not text.strip():
        raise InputError('the text query is empty: describe the pin, e.g. "gold fox with a red rim"')
    return text


def _prefetched_batches(pool: ThreadPoolExecutor, work: Callable[[Any], Any], items: Sequence[Any],
                        batch_size: int, batches_ahead: int = 2):
    """Yield (positions, results, errors) per batch while later batches decode in ``pool``."""
    pending: deque[tuple[int, Future]] = deque()
    next_item = 0
    window = batch_size * (batches_ahead + 1)
    while next_item < len(items) or pending:
        while next_item < len(items) and len(pending) < window:
            pending.append((next_item, pool.submit(work, items[next_item])))
            next_item += 1
        positions, results, errors = [], [], []
        while pending and len(positions) + len(errors) < batch_size:
            position, future = pending.popleft()
            result = future.result()
            if isinstance(result, Exception):
                errors.append((position, result.reason if isinstance(result, ImageError) else str(result)))
            else:
                positions.append(position)
                results.append(result)
        yield positions, results, errors


