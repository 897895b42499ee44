"""Which weights an encoder uses: the spec a user types, where the file is, and export.

Resolution is offline-first: a cached or local file never waits on the
network, and missing weights are one clear ``WeightsUnavailableError``
(pinid never continues with random weights). Forms: an open_clip
architecture with a pretrained tag or a weights file, ``hf-hub:ORG/REPO``,
and ``local-dir:PATH`` (written by :func:`save_local_dir`).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

from .._atomic import new_file_mode
from ..errors import InputError, WeightsUnavailableError

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
class ResolvedWeights:
    checkpoint: Path
    open_clip_name: str
    open_clip_kwargs: dict[str, Any] = field(default_factory=dict)


def resolve_weights(spec: EncoderSpec, *, offline: bool | None = None,
                    cache_dir: str | None = None) -> ResolvedWeights:
    """Find the weights file for ``spec`` locally, downloading only when online."""
    if offline is None:
        offline = _env_flag("PINID_OFFLINE") or _env_flag("HF_HUB_OFFLINE")
    if spec.model.startswith(LOCAL_DIR_PREFIX):
        folder = Path(spec.model[len(LOCAL_DIR_PREFIX):]).expanduser()
        return ResolvedWeights(_checkpoint_in_folder(folder, spec), f"{LOCAL_DIR_PREFIX}{folder}")
    if spec.model.startswith(HF_HUB_PREFIX):
        repo = spec.model[len(HF_HUB_PREFIX):]
        config = _hub_file(repo, CONFIG_FILE, spec, offline, cache_dir)
        weights = _first_hub_file(repo, _CHECKPOINT_NAMES[:3], spec, offline, cache_dir)
        if weights.parent != config.parent:
            raise WeightsUnavailableError(f"{spec.describe()}: config and weights are in different cache folders")
        return ResolvedWeights(weights, f"{LOCAL_DIR_PREFIX}{config.parent}")
    return _resolve_builtin(spec, offline, cache_dir)


def _resolve_builtin(spec: EncoderSpec, offline: bool, cache_dir: str | None) -> ResolvedWeights:
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
            return ResolvedWeights(path, spec.model)
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
    return ResolvedWeights(checkpoint, spec.model, kwargs)


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


def create_clip(spec: EncoderSpec, resolved: ResolvedWeights, device: str) -> tuple[Any, Callable]:
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


def jsonable(value: Any) -> Any:
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
        clip, _ = create_clip(encoder_spec, resolved, "cpu")
        model_cfg = model_cfg or open_clip.get_model_config(resolved.open_clip_name)
        preprocess_cfg = jsonable(dict(open_clip.get_model_preprocess_cfg(clip)))
    else:
        model_cfg = model_cfg or open_clip.get_model_config(model)
        if model_cfg is None:
            raise InputError(f"unknown open_clip model {model!r}")
        with torch.random.fork_rng():  # seeded, without touching the caller's RNG state
            torch.manual_seed(0)
            clip = open_clip.CLIP(**model_cfg)
        from open_clip.transform import PreprocessCfg

        preprocess_cfg = jsonable(asdict(PreprocessCfg(size=model_cfg["vision_cfg"]["image_size"])))
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg},
                                                 indent=2))
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    os.chmod(folder / WEIGHTS_FILE, new_file_mode(folder))  # safetensors creates it 0600, whatever the umask
    return folder
