"""Index builds and dedup runs on a Ray cluster: the heavy per-image work spread over Ray Data.

The cluster fills the same content-keyed caches a one-machine run fills, and
the one-machine code then does the rest from them: a Ray build is the normal
build with every vector and feature already cached, so its index has the same
format, ids and contents, and resumption works exactly as it does locally.

Flow (reader -> mapper -> writer, as clip-retrieval does it):

1. Ray tasks read and hash every file (sha256: the content key).
2. Contents the caches lack are decoded in Ray tasks, then encoded by an
   actor pool that loads the model once per actor (CPU, or ``gpus_per_worker``
   of a GPU each), and, separately, their local features are extracted by a
   second actor pool.
3. The driver streams the results into the caches as shards: each shard is
   written atomically (keys last) as soon as it is whole, so an interrupted
   run resumes from the shards already written, and a worker that dies is
   restarted by Ray and its batch retried.
4. The normal build (``pinid.index.build``) or grouping (``pinid.dedup``)
   runs on the driver from the caches: the FAISS index is trained on a sample
   of the vectors and filled from the shards, in one index directory.

Only the driver writes (no shared writable storage is needed for results);
every node must read the images at the same paths (shared storage) and, for
CLIP, have the same weights (``pinid export-model``; the actors check).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ClusterError, InputError, PinidError
from ..results import BuildReport, Progress
from .work import DecodeForEncoder, DecodeForFeatures, EncodeWorker, FeatureWorker, entry_from_bytes, hash_batch

if TYPE_CHECKING:
    from ..catalogue import Catalogue
    from ..dedup.group import DedupOptions, DedupReport
    from ..dedup.listings import Listing
    from ..encoder.cache import EmbeddingCache, EmbedOptions
    from ..encoder.clip import Encoder
    from ..index.build import BuildOptions
    from ..local.cache import FeatureCache
    from ..local.features import FeatureConfig

HASH_BLOCK_ROWS = 256  # files per hashing task
RAY_INSTALL_HINT = "pip install 'pinid[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a job runs on Ray.

    ``address``: ``None`` connects to ``RAY_ADDRESS`` if set, else starts a
    Ray instance on this machine; otherwise a cluster address (``auto``,
    ``HOST:6379``, ``ray://HOST:10001``). ``workers``: actors per pool (one
    model each); ``None`` scales from 1 up to what the cluster's CPUs (or
    GPUs) allow. ``gpus_per_worker``: GPUs per encoding actor (0: CPU).
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 32  # images per batch sent to an actor

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise InputError("Ray workers must be at least 1")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise InputError("GPUs per Ray worker must be >= 0 and CPUs per worker > 0")
        if self.batch_size < 1:
            raise InputError("batch size must be at least 1")

    def actor_pool(self) -> Any:
        import ray.data

        if self.workers is not None:
            return ray.data.ActorPoolStrategy(size=self.workers)
        return ray.data.ActorPoolStrategy(min_size=1, max_size=None)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data: the pinid[ray] extra)
    except ImportError:
        raise InputError(f"--ray needs Ray Data: {RAY_INSTALL_HINT}") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, *, quiet: bool = False) -> Iterator[Any]:
    """Connect to Ray for the length of a job; a session this opened is closed again, one already open is kept.

    Raises:
        InputError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = _ray()
    started = False
    if not ray.is_initialized():
        _check_reachable(address or os.environ.get("RAY_ADDRESS") or "")
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if address is None and not os.environ.get("RAY_ADDRESS"):
            kwargs["include_dashboard"] = False
        try:
            ray.init(address=address or None, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot start or reach Ray ({where}): {first}") from None
        started = True
    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars = False  # pinid shows its own per-stage bars
    context.print_on_execution_start = not quiet
    try:
        yield ray
    finally:
        context.enable_progress_bars, context.print_on_execution_start = before  # a caller's session as it was
        if started:
            ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once a HOST:PORT (or ray://HOST:PORT) that does not answer: Ray itself retries for minutes."""
    import socket

    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is `ray start "
                         "--head` running there, and is the port open?") from None


def _blocks(columns: dict[str, list[Any]], rows_per_block: int) -> Any:
    """A Ray dataset of these columns, in blocks of ``rows_per_block`` rows (one task each)."""
    import pyarrow as pa

    ray = _ray()
    table = pa.table(columns)
    count = max(1, table.num_rows)
    return ray.data.from_arrow([table.slice(start, rows_per_block) for start in range(0, count, rows_per_block)])


def _batches(dataset: Any, what: str) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's output batches as they finish; a failed job becomes one ``PinidError``.

    A ``PinidError`` raised on a worker (e.g. an ``EncoderMismatchError`` from
    an actor that found other weights) is raised as itself; anything else that
    stops the job is a ``ClusterError`` naming the stage.
    """
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
    except PinidError:
        raise
    except Exception as exc:  # Ray wraps worker errors in its own types
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, PinidError):
                raise cause from None
            cause = getattr(cause, "cause", None) or cause.__cause__
        text = str(exc).strip()
        reported = _pinid_error_in(text)
        if reported is not None:  # an actor that failed to start reaches the driver as text only
            raise reported from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        found = next((line for line in reversed(lines) if "Error" in line), lines[0] if lines else type(exc).__name__)
        raise ClusterError(f"the Ray job stopped while {what}: {found[:300]}; what finished is cached: "
                           "run the same command again to resume") from None


def _pinid_error_in(text: str) -> PinidError | None:
    """The last ``pinid.errors.SomeError: message`` line of a worker's traceback, as that error."""
    import re

    from .. import errors

    found = re.findall(r"^pinid\.errors\.(\w+): (.+)$", text, re.M)
    if not found:
        return None
    name, message = found[-1]
    kind = getattr(errors, name, None)
    if not (isinstance(kind, type) and issubclass(kind, PinidError)) or kind is errors.ImageError:
        return None
    return kind(message.strip())


def hash_files(paths: Sequence[Path], options: RayOptions = RayOptions(),
               on_progress: Progress | None = None) -> list[bytes | str]:
    """Each file's sha256 digest, or a one-line reason it cannot be read, hashed by Ray tasks."""
    digests: list[bytes | str] = ["not hashed"] * len(paths)
    if not paths:
        return digests
    dataset = _blocks({"position": list(range(len(paths))), "path": [str(Path(p).absolute()) for p in paths]},
                      HASH_BLOCK_ROWS).map_batches(hash_batch, batch_size=None)
    done = 0
    for batch in _batches(dataset, "hashing files"):
        for position, digest, reason in zip(batch["position"], batch["digest"], batch["reason"]):
            digests[int(position)] = bytes(digest) if not reason else str(reason)
        done += len(batch["position"])
        if on_progress is not None:
            on_progress("hashing (ray)", done, len(paths))
    return digests


def _decode_tasks() -> dict[str, Any]:
    """How decoding tasks are scheduled: they reserve no CPU, as many at once as the cluster has CPUs.

    A fixed actor pool may hold every CPU of the cluster (2 encoding actors on
    2 cores): tasks that reserved a CPU would then never start and the job
    would wait forever. Decoding is light beside the model, so it shares the
    cores, and Ray Data's backpressure bounds what it decodes ahead.
    Actors are restarted by Ray Data when they die (``max_restarts=-1``), and
    their batches retried.
    """
    ray = _ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return {"num_cpus": 0, "compute": ray.data.TaskPoolStrategy(size=max(1, cpus))}


def _rows_per_block(total: int, most: int) -> int:
    """Rows per block: at most ``most``, and small enough that every CPU of the cluster gets a block."""
    cpus = int(_ray().cluster_resources().get("CPU", 1))
    return max(1, min(most, -(-total // max(1, cpus))))


def _missing(paths: Sequence[Path], digests: Sequence[bytes | str], present: Callable[[bytes], bool]
             ) -> dict[str, list[Any]]:
    """One row (path, digest) per distinct readable content that ``present`` says is not cached."""
    first: dict[bytes, str] = {}
    for path, digest in zip(paths, digests):
        if isinstance(digest, bytes) and digest not in first and not present(digest):
            first[digest] = str(Path(path).absolute())
    return {"path": list(first.values()), "digest": list(first)}


def encoder_loader(encoder: "Encoder", *, gpus_per_worker: float = 0.0,
                   offline: bool | None = None) -> Callable[[], "Encoder"]:
    """How each actor loads the driver's encoder: the same recorded spec, on its own CPU or GPU."""
    from ..encoder.clip import Encoder

    return functools.partial(Encoder.load, encoder.spec, device="cuda" if gpus_per_worker > 0 else "cpu",
                             offline=offline)


def fill_embeddings(paths: Sequence[Path], digests: Sequence[bytes | str], load_encoder: Callable[[], Any],
                    identity: dict[str, Any], image_size: int, cache: "EmbeddingCache",
                    options: RayOptions = RayOptions(), chunk_size: int = 256,
                    on_progress: Progress | None = None) -> int:
    """Encode every content ``cache`` lacks on the cluster; returns how many were encoded.

    Results are written into ``cache`` in chunks of ``chunk_size`` as they
    arrive. Files that cannot be decoded are left out (the run that reads the
    cache afterwards reports them).
    """
    todo = _missing(paths, digests, cache.__contains__)
    total = len(todo["path"])
    if total == 0:
        return 0
    dataset = (_blocks(todo, _rows_per_block(total, options.batch_size))
               .map_batches(DecodeForEncoder(image_size), batch_size=None, **_decode_tasks())
               .map_batches(EncodeWorker, fn_constructor_args=(load_encoder, identity,
                                                               max(1, int(options.cpus_per_worker)),
                                                               options.batch_size),
                            batch_size=options.batch_size, compute=options.actor_pool(),
                            num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None))
    encoded = done = 0
    keys: list[bytes] = []
    vectors: list[np.ndarray] = []
    hashes: list[np.ndarray] = []

    def write() -> None:
        if keys:
            cache.add_chunk(list(keys), np.stack(vectors), np.stack(hashes))
            keys.clear(), vectors.clear(), hashes.clear()

    try:
        for batch in _batches(dataset, "encoding"):
            for digest, vector, photo_hashes, reason in zip(batch["digest"], batch["vector"], batch["hashes"],
                                                            batch["reason"]):
                if not reason:
                    keys.append(bytes(digest))
                    vectors.append(np.asarray(vector, np.float32))
                    hashes.append(np.asarray(photo_hashes, np.uint64))
                    encoded += 1
            if len(keys) >= chunk_size:
                write()
            done += len(batch["digest"])
            if on_progress is not None:
                on_progress("encoding (ray)", done, total)
    finally:
        write()  # what arrived before a failure or Ctrl-C is kept: a rerun resumes after it
    return encoded


def fill_features(paths: Sequence[Path], digests: Sequence[bytes | str], config: "FeatureConfig", kind: str,
                  cache: "FeatureCache", options: RayOptions = RayOptions(),
                  on_progress: Progress | None = None) -> int:
    """Extract the local features of every content ``cache`` lacks on the cluster; returns how many.

    ``kind``: "reference" (catalogue images, as ``pinid build-index``) or
    "listing" (listing photos, as ``pinid dedup --mode pin --encoder local``).
    """
    if kind not in ("reference", "listing"):
        raise ValueError(f"kind must be 'reference' or 'listing', not {kind!r}")
    if not cache.writable:
        raise InputError(f"local-feature cache {cache.folder} is being written by another pinid process; "
                         "wait for it to finish or use another --cache")
    todo = _missing(paths, digests, cache.__contains__)
    total = len(todo["path"])
    if total == 0:
        return 0
    rows = _rows_per_block(total, min(options.batch_size, 8))  # ~1 s an image: small batches spread well
    dataset = (_blocks(todo, rows)
               .map_batches(DecodeForFeatures(config, kind), batch_size=None, **_decode_tasks())
               .map_batches(FeatureWorker, fn_constructor_args=(config, kind, max(1, int(options.cpus_per_worker))),
                            batch_size=rows, compute=options.actor_pool(), num_cpus=options.cpus_per_worker))
    extracted = done = 0
    try:
        for batch in _batches(dataset, "extracting local features"):
            for digest, entry, reason in zip(batch["digest"], batch["entry"], batch["reason"]):
                if not reason:
                    cache.put(bytes(digest), entry_from_bytes(bytes(entry)))
                    extracted += 1
            done += len(batch["digest"])
            if on_progress is not None:
                on_progress("local features (ray)", done, total)
    finally:
        cache.flush()  # what arrived before a failure or Ctrl-C is kept
    return extracted


# ------------------------------------------------------------------- the jobs
def build_index_on_ray(catalogue: "Catalogue", target: str | os.PathLike, encoder: "Encoder | None",
                       options: "BuildOptions", ray_options: RayOptions = RayOptions(), *,
                       offline: bool | None = None, load_encoder: Callable[[], Any] | None = None,
                       on_progress: Progress | None = None) -> BuildReport:
    """``pinid build-index --ray``: the per-image work on Ray, then the normal build from the caches.

    ``options`` must carry both caches (``cache`` for CLIP indexes,
    ``feature_cache`` always): they hold the shards the cluster writes.
    ``load_encoder``: how actors load the encoder (default: ``encoder``'s own
    spec, on a GPU when ``ray_options`` gives actors GPUs). Call inside
    :func:`ray_session`. The result is an ordinary index, the
    same as ``build_index`` gives without Ray.

    Raises:
        InputError: a cache is missing, the output is refused (``check_output``,
            before any work), or Ray cannot be reached.
    """
    from ..index.build import build_index, check_output

    started = time.perf_counter()
    check_output(target, catalogue.source)
    if options.feature_cache is None or (encoder is not None and options.cache is None):
        raise InputError("a Ray build keeps its results in a cache: pass --cache DIR")
    paths = [image for pin in catalogue.pins for image in pin.images]
    digests = hash_files(paths, ray_options, on_progress)
    if encoder is not None:
        assert options.cache is not None
        load_encoder = load_encoder or encoder_loader(encoder, gpus_per_worker=ray_options.gpus_per_worker,
                                                      offline=offline)
        fill_embeddings(paths, digests, load_encoder, encoder.identity(), encoder.image_size, options.cache,
                        ray_options, on_progress=on_progress)
    fill_features(paths, digests, options.config.features, "reference", options.feature_cache, ray_options,
                  on_progress)
    known = {str(path): digest for path, digest in zip(paths, digests)}
    report = build_index(catalogue, Path(target), encoder, replace(options, known_digests=known), on_progress)
    return replace(report, seconds=time.perf_counter() - started)


def dedup_on_ray(listings: Sequence["Listing"], encoder: Any, cache: "EmbeddingCache", options: "DedupOptions",
                 embed_options: "EmbedOptions", ray_options: RayOptions = RayOptions(), *,
                 feature_cache: "FeatureCache | None" = None, load_encoder: Callable[[], Any] | None = None,
                 on_progress: Progress | None = None) -> "DedupReport":
    """``pinid dedup --ray``: hashing, decoding, encoding (and in local pin mode, features) on Ray.

    ``encoder``: a loaded CLIP ``Encoder``, or ``PhotoHashOnly()`` for
    ``--encoder local`` (then ``feature_cache`` is needed in pin mode).
    ``load_encoder``: how actors load it (default: the encoder's own spec for
    an ``Encoder``, the same class otherwise). The grouping itself runs on the
    driver from the caches and gives the same groups as a run without Ray.
    """
    from ..dedup.group import dedup
    from ..dedup.local_pairs import LocalDedupConfig, PhotoHashOnly, dedup_local

    started = time.perf_counter()
    paths = [listing.image for listing in listings]
    digests = hash_files(paths, ray_options, on_progress)
    local = isinstance(encoder, PhotoHashOnly)
    if load_encoder is None:
        load_encoder = type(encoder) if local else encoder_loader(encoder,
                                                                  gpus_per_worker=ray_options.gpus_per_worker)
    made = fill_embeddings(paths, digests, load_encoder, encoder.identity(), int(getattr(encoder, "image_size", 224)),
                           cache, ray_options, on_progress=on_progress)
    if not local:
        report = dedup(listings, encoder, cache, options, embed_options, on_progress, digests=digests)
    else:
        if options.mode == "pin":
            if feature_cache is None:
                raise InputError("pin mode with --encoder local needs a local-feature cache (open_feature_cache)")
            made = fill_features(paths, digests, LocalDedupConfig().feature_config(), "listing", feature_cache,
                                 ray_options, on_progress)  # what the report counts in this mode
        report = dedup_local(listings, cache, feature_cache, options, embed_options=embed_options,
                             on_progress=on_progress, digests=digests)
    # what the cluster made counts as made in this run, as it would without Ray
    made = min(made, report.cached) + report.encoded
    return replace(report, encoded=made, cached=report.encoded + report.cached - made,
                   seconds=time.perf_counter() - started)


__all__ = ["RAY_INSTALL_HINT", "RayOptions", "build_index_on_ray", "dedup_on_ray", "encoder_loader",
           "fill_embeddings", "fill_features", "hash_files", "ray_session"]
