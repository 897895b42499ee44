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
import re
import shlex
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

from .._atomic import new_file_mode, replace_directory_atomically
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
# A pretrained tag's preprocessing, as create_model_and_transforms takes it (it builds
# force_preprocess_cfg itself from these, so that one cannot be passed).
_PREPROCESS_KWARGS = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
                      "resize_mode": "image_resize_mode"}
# How long the reachability check may take, DNS look-up included.
NETWORK_TIMEOUT_S = 5.0


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
    """Where the weights are and how open_clip must build the model around them."""

    checkpoint: Path
    open_clip_name: str
    # keyword arguments of open_clip.create_model_and_transforms (a tag's preprocessing, quick_gelu)
    open_clip_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Source:
    """Where missing weights would come from, for the one-line error that says so."""

    spec: EncoderSpec
    repo: str | None = None  # Hugging Face repo id
    files: tuple[str, ...] = ()
    folder: Path | None = None  # the cache folder searched

    def where(self) -> str:
        files = " or ".join(self.files)
        if self.repo:
            return f"Hugging Face repo {self.repo} ({files}) is not in the cache folder {self.folder}"
        return f"{files} is not in the cache folder {self.folder}"

    def help(self) -> str:
        """The exact commands that make these weights usable offline."""
        spec = self.spec
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.model.split("/")[-1] if spec.model.startswith(HF_HUB_PREFIX)
                        else f"{spec.model}-{spec.pretrained}").strip("-.") or "weights"
        export = f"pinid export-model {shlex.quote(spec.model)}"
        if spec.pretrained:
            export += f" --pretrained {shlex.quote(spec.pretrained)}"
        return (f"to work offline, run `{export} -o {folder}` on a connected machine, copy {folder} here "
                f"and pass `--model local-dir:{folder}` (or `--pretrained FILE` with a .safetensors/.bin file "
                "for a built-in architecture)")


def recorded_spec(spec: EncoderSpec) -> EncoderSpec:
    """``spec`` with its folder or weights file made absolute: an index records where they are.

    Symlinks are kept (a file in a Hugging Face snapshot stays a snapshot path,
    which :func:`resolve_weights` follows to the current revision if it goes).
    """
    if spec.model.startswith(LOCAL_DIR_PREFIX):
        return EncoderSpec(LOCAL_DIR_PREFIX + str(Path(spec.model[len(LOCAL_DIR_PREFIX):]).expanduser().resolve()))
    if spec.model.startswith(HF_HUB_PREFIX) or not spec.pretrained:
        return spec
    path = Path(spec.pretrained).expanduser()
    if path.is_absolute() or not path.is_file():
        return spec
    import open_clip

    if open_clip.get_pretrained_cfg(spec.model, spec.pretrained):
        return spec  # a tag that happens to name a file here too: the tag wins, as in resolve_weights
    return EncoderSpec(spec.model, os.path.abspath(path))


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
        config = _hub_file(repo, CONFIG_FILE, _hub_source(spec, repo, [CONFIG_FILE], cache_dir), offline, cache_dir)
        names = _CHECKPOINT_NAMES[:3]
        weights = _first_hub_file(repo, names, _hub_source(spec, repo, names, cache_dir), offline, cache_dir)
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
        moved = _current_snapshot_file(path)
        if moved is not None:  # an index recorded a cache file of an older revision: same repo, same file
            return ResolvedWeights(moved, spec.model)
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
        checkpoint = _first_hub_file(repo, names, _hub_source(spec, repo, names, cache_dir), offline, cache_dir)
    elif tag_cfg.get("url"):
        checkpoint = _url_file(tag_cfg["url"], spec, offline, cache_dir)
    else:
        raise WeightsUnavailableError(f"{spec.describe()}: open_clip lists no source for these weights")
    # We pass the file, not the tag, so open_clip does not apply the tag's settings itself.
    kwargs: dict[str, Any] = {kwarg: tag_cfg[key] for key, kwarg in _PREPROCESS_KWARGS.items() if key in tag_cfg}
    kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
    return ResolvedWeights(checkpoint, spec.model, kwargs)


def _hub_source(spec: EncoderSpec, repo: str, names: Iterable[str], cache_dir: str | None) -> _Source:
    from huggingface_hub import constants

    root = Path(cache_dir or constants.HF_HUB_CACHE)
    return _Source(spec, repo, tuple(names), root / ("models--" + repo.replace("/", "--")))


def _current_snapshot_file(path: Path) -> Path | None:
    """The same file in the current revision, for a missing file under ``models--ORG--REPO/snapshots/REV/``.

    A cache update replaces the snapshot folder, so a path recorded by an index
    goes stale while the repo is still cached; the index's weights digest then
    tells whether the weights are still the same.
    """
    parts = path.absolute().parts
    for i in range(len(parts) - 3):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            repo = parts[i][len("models--"):].replace("--", "/")
            found = _cached_hub_file(repo, "/".join(parts[i + 3:]), str(Path(*parts[:i])))
            return found if found is not None and found.is_file() else None
    return None


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


def _first_hub_file(repo: str, names: Iterable[str], source: _Source, offline: bool,
                    cache_dir: str | None) -> Path:
    names = list(names)
    for name in names:  # cache first: a cached file must never wait on the network
        cached = _cached_hub_file(repo, name, cache_dir)
        if cached is not None:
            return cached
    last_error: Exception | None = None
    for name in names:
        try:
            return _hub_file(repo, name, source, offline, cache_dir)
        except WeightsUnavailableError as exc:
            last_error = exc
    assert last_error is not None
    raise last_error


def _cached_hub_file(repo: str, filename: str, cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo, filename=filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) else None


def _hub_file(repo: str, filename: str, source: _Source, offline: bool, cache_dir: str | None) -> Path:
    cached = _cached_hub_file(repo, filename, cache_dir)
    if cached is not None:
        return cached
    from huggingface_hub import constants, hf_hub_download

    _require_network(constants.ENDPOINT, source, offline)
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache_dir))
    except Exception as exc:  # huggingface_hub raises many unrelated types
        raise WeightsUnavailableError(
            f"weights for {source.spec.describe()} could not be downloaded from {repo} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); {source.help()}") from exc


def _url_file(url: str, spec: EncoderSpec, offline: bool, cache_dir: str | None) -> Path:
    from open_clip.pretrained import download_pretrained_from_url

    folder = Path(cache_dir or Path.home() / ".cache" / "clip")
    target = folder / os.path.basename(urlparse(url).path)
    if target.is_file():
        return target
    source = _Source(spec, None, (target.name,), folder)
    _require_network(url, source, offline)
    try:
        return Path(download_pretrained_from_url(url, cache_dir=cache_dir))
    except Exception as exc:
        raise WeightsUnavailableError(f"weights for {spec.describe()} could not be downloaded from {url} "
                                      f"({exc}); {source.help()}") from exc


def _require_network(url: str, source: _Source, offline: bool) -> None:
    """Fail in seconds, not after a minute of retries, when the host is unreachable."""
    if offline:
        raise WeightsUnavailableError(
            f"weights for {source.spec.describe()} are missing and offline mode is on: {source.where()}; "
            f"{source.help()}")
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        _connect_within(host, port, NETWORK_TIMEOUT_S)
    except OSError as exc:
        raise WeightsUnavailableError(
            f"weights for {source.spec.describe()} are missing and {host} cannot be reached ({exc}): "
            f"{source.where()}; {source.help()}") from None


def _connect_within(host: str, port: int, timeout: float) -> None:
    """Open and close a TCP connection to ``host`` within ``timeout`` seconds, DNS look-up included.

    ``socket.create_connection``'s timeout does not cover ``getaddrinfo``, which
    can hang for half a minute on a machine whose resolver is unreachable; the
    look-up runs in a daemon thread that is abandoned at the deadline.
    """
    deadline = time.monotonic() + timeout
    answer: dict[str, Any] = {}

    def look_up() -> None:
        try:
            answer["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            answer["error"] = exc

    worker = threading.Thread(target=look_up, name="pinid-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise OSError(f"no DNS answer for {host} within {timeout:g} s")
    if "error" in answer:
        raise answer["error"]
    last: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in answer["addresses"]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OSError(f"no connection to {host} within {timeout:g} s")
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(address)
            return
        except OSError as exc:
            last = exc
    raise last


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


def uses_quick_gelu(module: Any) -> bool:
    """Whether ``module`` computes with QuickGELU (OpenAI-trained weights), which no tensor records."""
    from open_clip.transformer import QuickGELU

    return any(isinstance(part, QuickGELU) for part in module.modules())


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

    if not random_weights:
        encoder_spec = EncoderSpec(model, pretrained)
        resolved = resolve_weights(encoder_spec)
        clip, _ = create_clip(encoder_spec, resolved, "cpu")
        model_cfg = dict(model_cfg or open_clip.get_model_config(resolved.open_clip_name))
        if uses_quick_gelu(clip):  # a tag's setting, not in the architecture's config: keep the activation
            model_cfg["quick_gelu"] = True
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
    return write_local_dir(out_dir, clip, model_cfg, preprocess_cfg)


def write_local_dir(out_dir: str | os.PathLike, clip: Any, model_cfg: dict, preprocess_cfg: dict) -> Path:
    """Write ``clip`` (an ``open_clip.CLIP`` built from ``model_cfg``) as a ``local-dir:`` checkpoint.

    The one writer of the layout open_clip's ``local-dir:`` schema reads, shared by
    :func:`save_local_dir` and models trained elsewhere (``scripts/train_standin.py``).
    """
    from safetensors.torch import save_file

    folder = check_export_folder(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    config = {"model_cfg": jsonable(model_cfg), "preprocess_cfg": jsonable(preprocess_cfg)}

    def write(staging: Path) -> None:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        save_file(state, str(staging / WEIGHTS_FILE))
        os.chmod(staging / WEIGHTS_FILE, new_file_mode(staging))  # safetensors creates it 0600, whatever the umask

    # written beside and swapped in: a reader never sees half a checkpoint, a failure leaves the old one
    replace_directory_atomically(folder, write, is_replaceable=_is_export_folder)
    return folder


def check_export_folder(out_dir: str | os.PathLike) -> Path:
    """The folder an export may write: new, empty, or an earlier export (its two files and nothing else).

    Checked before any weights are loaded, so a mistaken ``-o`` costs nothing
    and never touches a folder of someone else's files.
    """
    text = str(out_dir)
    if not text.strip():
        raise InputError("the export folder name is empty")
    folder = Path(out_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o {folder} is a file, not a folder")
    if folder.is_dir() and not _is_export_folder(folder):
        raise InputError(f"-o {folder} holds other files; export into a new or empty folder")
    return folder


def _is_export_folder(folder: Path) -> bool:
    try:
        return {entry.name for entry in folder.iterdir()} <= {CONFIG_FILE, WEIGHTS_FILE}
    except OSError:
        return False
