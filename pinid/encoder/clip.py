"""The open_clip image encoder: batched, prefetched encoding with the weights' own preprocessing.

Weights and preprocessing travel together: the preprocessing that belongs to
the weights (size, mean/std, resize mode) is always the one used, and it is
recorded in every index so a query is never encoded differently from the
catalogue.
"""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ImageError, InputError
from ..images import ImageSource, load_image
from .weights import (DEFAULT_MODEL, DEFAULT_PRETRAINED, LOCAL_DIR_PREFIX, EncoderSpec, create_clip, jsonable,
                      resolve_weights)

def weights_digest(module: Any) -> str:
    """sha256 over the image tower's tensors (names, shapes, values).

    It identifies the weights, not the file: the same weights exported from a
    .bin to a safetensors folder keep their digest, so an index built online
    can be queried offline with the exported copy.
    """
    import torch

    digest = hashlib.sha256()
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
                 embedding_dim: int, weights_sha256: str, device: str) -> None:
        self.spec = spec
        self.embedding_dim = embedding_dim
        self.weights_sha256 = weights_sha256
        self.preprocess_cfg = preprocess_cfg
        self.device = device
        self._visual = visual
        self._preprocess = preprocess
        size = preprocess_cfg.get("size", 224)
        self.image_size = int(max(size) if isinstance(size, (list, tuple)) else size)

    @classmethod
    def load(cls, model: str | EncoderSpec = DEFAULT_MODEL, pretrained: str | None = DEFAULT_PRETRAINED,
             *, device: str = "auto", offline: bool | None = None, cache_dir: str | None = None) -> "Encoder":
        """Load weights from the local cache, a file or a folder; download only if online.

        ``offline`` (default: the ``PINID_OFFLINE`` or ``HF_HUB_OFFLINE`` environment
        variable) forbids any network access.
        """
        spec = model if isinstance(model, EncoderSpec) else EncoderSpec(model, pretrained)
        if spec.model.startswith(LOCAL_DIR_PREFIX):  # record where it is, not where we stood
            spec = EncoderSpec(LOCAL_DIR_PREFIX + str(Path(spec.model[len(LOCAL_DIR_PREFIX):]).expanduser().resolve()))
        resolved = resolve_weights(spec, offline=offline, cache_dir=cache_dir)
        device = _pick_device(device)
        import open_clip

        clip, preprocess = create_clip(spec, resolved, device)
        visual = clip.visual.eval()
        preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(clip))
        embedding_dim = int(getattr(visual, "output_dim", 0) or clip.text_projection.shape[1])
        del clip  # keep only the image tower: the text tower is a third of the memory
        return cls(spec, visual, preprocess, jsonable(preprocess_cfg), embedding_dim,
                   weights_digest(visual), device)

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

    def _preprocess_or_error(self, source: ImageSource) -> Any:

        try:
            return self.preprocess(source)
        except ImageError as exc:
            return exc


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


