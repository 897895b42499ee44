"""The open_clip image encoder: offline-first weight resolution and batched encoding.

Weights and preprocessing travel together: the preprocessing that belongs to
the weights (size, mean/std, resize mode) is always the one used, and it is
recorded in every index so a query is never encoded differently from the
catalogue. Missing weights are one clear ``WeightsUnavailableError``; pinid
never continues with random weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlparse

import numpy as np

from .errors import InputError, WeightsUnavailableError
from .images import ImageSource, load_image

DEFAULT_MODEL = "ViT-B-32-256"
DEFAULT_PRETRAINED = "datacomp_s34b_b86k"

LOCAL_DIR_PREFIX = "local-dir:"
HF_HUB_PREFIX = "hf-hub:"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
# Names open_clip looks for in a checkpoint folder, most preferred first.
_CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")

OFFLINE_HELP = (
    "to work offline, run `pinid export-model MODEL --pretrained TAG -o DIR` on a connected "
    "machine and pass `--model local-dir:DIR`, or pass `--pretrained /path/to/weights` "
    "(a .safetensors/.bin file) for a built-in architecture"
)


@dataclass(frozen=True)
class EncoderSpec:
    """Which model and weights to use, as a user names them."""

    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED

    def __post_init__(self) -> None:
        if self.model.startswith((LOCAL_DIR_PREFIX, HF_HUB_PREFIX)):
            # The schema names the weights itself; a tag would be silently ignored.
            object.__setattr__(self, "pretrained", None)

    def describe(self) -> str:
        return self.model if self.pretrained is None else f"{self.model} ({self.pretrained})"


@dataclass(frozen=True)
class _ResolvedWeights:
    checkpoint: Path
    open_clip_name: str
    open_clip_kwargs: dict[str, Any] = field(default_factory=dict)


def resolve_weights(spec: EncoderSpec, *, offline: bool | None = None,
                    cache_dir: str | None = None) -> _ResolvedWeights:
    """Find the weights file for ``spec`` locally, downloading only when online."""
    if offline is None:
        offline = _env_flag("PINID_OFFLINE") or _env_flag("HF_HUB_OFFLINE")
    if spec.model.startswith(LOCAL_DIR_PREFIX):
        folder = Path(spec.model[len(LOCAL_DIR_PREFIX):]).expanduser()
        return _ResolvedWeights(_checkpoint_in_folder(folder, spec), f"{LOCAL_DIR_PREFIX}{folder}")
    if spec.model.startswith(HF_HUB_PREFIX):
        repo = spec.model[len(HF_HUB_PREFIX):]
        config = _hub_file(repo, CONFIG_FILE, spec, offline, cache_dir)
        weights = _first_hub_file(repo, _CHECKPOINT_NAMES[:3], spec, offline, cache_dir)
        if weights.parent != config.parent:
            raise WeightsUnavailableError(f"{spec.describe()}: config and weights are in different cache folders")
        return _ResolvedWeights(weights, f"{LOCAL_DIR_PREFIX}{config.parent}")
    return _resolve_builtin(spec, offline, cache_dir)


def _resolve_builtin(spec: EncoderSpec, offline: bool, cache_dir: str | None) -> _ResolvedWeights:
    import open_clip

    if spec.model not in open_clip.list_models():
        raise InputError(f"unknown open_clip model {spec.model!r}; see `open_clip.list_models()`, "
                         "or use hf-hub:ORG/REPO or local-dir:PATH")
    if not spec.pretrained:
        raise WeightsUnavailableError(
            f"no weights given for {spec.model}: pass a pretrained tag or weights file "
            "(pinid never runs with random weights)")
    tag_cfg = open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
    if not tag_cfg:
        path = Path(spec.pretrained).expanduser()
        if path.is_file():
            return _ResolvedWeights(path, spec.model)
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.model)) or "none"
        raise WeightsUnavailableError(
            f"{spec.pretrained!r} is neither a pretrained tag of {spec.model} nor a weights file "
            f"(known tags: {tags})")
    if tag_cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" (default file name) or "org/repo/file.bin".
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        stem, suffix = os.path.splitext(filename)
        safe = "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else f"{stem}.safetensors"
        names = (safe, filename) if suffix in (".bin", ".pth") else (filename,)
        checkpoint = _first_hub_file(repo, names, spec, offline, cache_dir)
    elif tag_cfg.get("url"):
        checkpoint = _url_file(tag_cfg["url"], spec, offline, cache_dir)
    else:
        raise WeightsUnavailableError(f"{spec.describe()}: open_clip lists no source for these weights")
    kwargs: dict[str, Any] = {
        "force_preprocess_cfg": {k: tag_cfg[k] for k in _PREPROCESS_KEYS if k in tag_cfg},
        "force_quick_gelu": bool(tag_cfg.get("quick_gelu", False)),
    }
    return _ResolvedWeights(checkpoint, spec.model, kwargs)


def _checkpoint_in_folder(folder: Path, spec: EncoderSpec) -> Path:
    if not folder.is_dir():
        raise WeightsUnavailableError(f"{spec.model}: folder {folder} does not exist")
    if not (folder / CONFIG_FILE).is_file():
        raise WeightsUnavailableError(f"{spec.model}: {folder / CONFIG_FILE} is missing")
    for name in _CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsUnavailableError(
        f"{spec.model}: no weights file in {folder} (expected one of {', '.join(_CHECKPOINT_NAMES)})")


def _first_hub_file(repo: str, names: Iterable[str], spec: EncoderSpec, offline: bool,
                    cache_dir: str | None) -> Path:
    names = list(names)
    for name in names:  # cache first: a cached file must never wait on the network
        cached = _cached_hub_file(repo, name, cache_dir)
        if cached is not None:
            return cached
    last_error: Exception | None = None
    for name in names:
        try:
            return _hub_file(repo, name, spec, offline, cache_dir)
        except WeightsUnavailableError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error


def _cached_hub_file(repo: str, filename: str, cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo, filename=filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) else None


def _hub_file(repo: str, filename: str, spec: EncoderSpec, offline: bool, cache_dir: str | None) -> Path:
    cached = _cached_hub_file(repo, filename, cache_dir)
    if cached is not None:
        return cached
    from huggingface_hub import constants, hf_hub_download

    _require_network(constants.ENDPOINT, spec, offline)
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache_dir))
    except Exception as exc:  # huggingface_hub raises many unrelated types
        raise WeightsUnavailableError(
            f"weights for {spec.describe()} could not be downloaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); {OFFLINE_HELP}") from exc


def _url_file(url: str, spec: EncoderSpec, offline: bool, cache_dir: str | None) -> Path:
    from open_clip.pretrained import download_pretrained_from_url

    target = Path(cache_dir or Path.home() / ".cache" / "clip") / os.path.basename(urlparse(url).path)
    if target.is_file():
        return target
    _require_network(url, spec, offline)
    try:
        return Path(download_pretrained_from_url(url, cache_dir=cache_dir))
    except Exception as exc:
        raise WeightsUnavailableError(f"weights for {spec.describe()} could not be downloaded ({exc}); "
                                      f"{OFFLINE_HELP}") from exc


def _require_network(url: str, spec: EncoderSpec, offline: bool) -> None:
    """Fail in seconds, not after a minute of retries, when the host is unreachable."""
    if offline:
        raise WeightsUnavailableError(
            f"weights for {spec.describe()} are not in the local cache and offline mode is on; {OFFLINE_HELP}")
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise WeightsUnavailableError(
            f"weights for {spec.describe()} are not in the local cache and {host} cannot be reached "
            f"({exc}); {OFFLINE_HELP}") from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


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
    failures: list[tuple[int, str]]  # (position in the input, one-line reason)


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

        clip, preprocess = _create_clip(spec, resolved, device)
        visual = clip.visual.eval()
        preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(clip))
        embedding_dim = int(getattr(visual, "output_dim", 0) or clip.text_projection.shape[1])
        del clip  # keep only the image tower: the text tower is a third of the memory
        return cls(spec, visual, preprocess, _jsonable(preprocess_cfg), embedding_dim,
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
        from .errors import ImageError

        try:
            return self.preprocess(source)
        except ImageError as exc:
            return exc


def _create_clip(spec: EncoderSpec, resolved: _ResolvedWeights, device: str) -> tuple[Any, Callable]:
    import open_clip

    from_folder = resolved.open_clip_name.startswith(LOCAL_DIR_PREFIX)
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            resolved.open_clip_name, pretrained=None if from_folder else str(resolved.checkpoint),
            device=device, require_pretrained=True, **resolved.open_clip_kwargs)
    except Exception as exc:  # torch/safetensors/open_clip raise many types for a bad checkpoint
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise WeightsUnavailableError(f"cannot load {spec.describe()} from {resolved.checkpoint}: "
                                      f"{first_line}") from exc
    return clip, preprocess


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
                errors.append((position, str(result)))
            else:
                positions.append(position)
                results.append(result)
        yield positions, results, errors


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))


def save_local_dir(out_dir: str | os.PathLike, model: str = DEFAULT_MODEL, pretrained: str | None = None, *,
                   model_cfg: dict | None = None, random_weights: bool = False) -> Path:
    """Write a self-contained ``local-dir:`` checkpoint (config + safetensors weights).

    Use it to carry cached weights to an offline machine. ``random_weights=True``
    (with a built-in name or an explicit ``model_cfg``) writes an untrained model:
    only for tests and speed benchmarks, and it has to be asked for by name.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    if not random_weights:
        encoder_spec = EncoderSpec(model, pretrained)
        resolved = resolve_weights(encoder_spec)
        clip, _ = _create_clip(encoder_spec, resolved, "cpu")
        model_cfg = model_cfg or open_clip.get_model_config(resolved.open_clip_name)
        preprocess_cfg = _jsonable(dict(open_clip.get_model_preprocess_cfg(clip)))
    else:
        model_cfg = model_cfg or open_clip.get_model_config(model)
        if model_cfg is None:
            raise InputError(f"unknown open_clip model {model!r}")
        with torch.random.fork_rng():  # seeded, without touching the caller's RNG state
            torch.manual_seed(0)
            clip = open_clip.CLIP(**model_cfg)
        from open_clip.transform import PreprocessCfg

        preprocess_cfg = _jsonable(asdict(PreprocessCfg(size=model_cfg["vision_cfg"]["image_size"])))
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg},
                                                 indent=2))
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder
