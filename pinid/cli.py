"""The `pinid` command: parse arguments, show progress, print results.

All work happens in the library; every ``PinidError`` becomes one line on
stderr and the exit code of its class (see README, "Exit codes"). Ctrl-C
(exit 130) and SIGTERM (exit 143) end with one line, ``pinid: interrupted``,
after the usual clean-up: a build being written is removed, the previous
index stays as it was.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import click

from ._version import __version__
from .errors import PinidError
from .tables import clean_text as plain
from .tables import dumps

EXIT_IMAGE_ERROR = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so that ``finally`` and ``except BaseException`` clean up."""

_model_option = click.option("--model", default=None, metavar="NAME",
                             help="open_clip model name, hf-hub:ORG/REPO or local-dir:PATH "
                                  "[build default: ViT-B-32-256]")
_pretrained_option = click.option("--pretrained", default=None, metavar="TAG|FILE",
                                  help="pretrained tag or weights file for a built-in model "
                                       "[build default: datacomp_s34b_b86k]")
_device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N")
_offline_option = click.option("--offline", is_flag=True, default=None,
                               help="never touch the network; use cached or local weights only "
                                    "(also PINID_OFFLINE=1)")
_threads_option = click.option("--threads", type=click.IntRange(min=1), default=None,
                               help="CPU threads for the model [default: torch's choice]")


_ray_options = [
    click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
                 help="run the per-image work on Ray (pip install 'pinid[ray]'): alone, RAY_ADDRESS or a new local "
                      "instance; or a cluster address (auto, HOST:6379, ray://HOST:10001). Put it last or write "
                      "--ray=ADDRESS"),
    click.option("--ray-workers", type=click.IntRange(min=1), default=None, metavar="N",
                 help="Ray actors per stage, one model each [default: as many as the cluster's CPUs allow]"),
    click.option("--ray-gpus", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="G",
                 help="GPUs per Ray encoding actor (e.g. 1, or 0.5 for two actors a GPU)"),
]


def _ray_option_group(function: Any) -> Any:
    for option in reversed(_ray_options):
        function = option(function)
    return function


def _ray_options_of(ray_address: str | None, ray_workers: int | None, ray_gpus: float, batch_size: int,
                    *, encoder_kind: str) -> Any:
    """The ``RayOptions`` the --ray flags ask for, or ``None`` without --ray; bad combinations are refused."""
    from .errors import InputError

    if ray_address is None:
        if ray_workers is not None or ray_gpus:
            raise InputError("--ray-workers and --ray-gpus need --ray")
        return None
    if ray_address and os.path.exists(ray_address):
        raise InputError(f"--ray took {ray_address!r} as the cluster address; it is a path here: put --ray last "
                         "or write --ray=ADDRESS")
    if ray_gpus and encoder_kind == "local":
        raise InputError("--ray-gpus is for CLIP encoding; --encoder local runs on CPUs only")
    from .cluster import RayOptions

    return RayOptions(address=ray_address or None, workers=ray_workers, gpus_per_worker=ray_gpus,
                      batch_size=batch_size)


@contextmanager
def _ray_session(options: Any, quiet: bool) -> Iterator[None]:
    """Connect to Ray for one command; Ray Data logs only errors (pinid shows its own progress)."""
    import logging

    from .cluster import ray_session

    with ray_session(options.address, quiet=quiet):
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        yield


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pinid")
def cli() -> None:
    """Which pin is this? Identify enamel pins from photos against a reference catalogue."""


@cli.command("build-index")
@click.argument("catalogue", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(),
              help="index directory to create, or pinid index to replace (atomically; a symlink's "
                   "target is replaced)")
@click.option("--encoder", "encoder_kind", type=click.Choice(["clip", "local"]), default="clip", show_default=True,
              help="clip: CLIP embeddings plus local features; local: local features only, no model "
                   "download at all")
@_model_option
@_pretrained_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="threads for image decoding, local features and self-calibration")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="cache folder for embeddings and local features, keyed by file content: rebuilds and "
                   "`pinid add` encode and extract only new or changed images, and an interrupted build resumes")
@click.option("--reset-cache", is_flag=True, help="discard the cache (e.g. made by another encoder) first")
@click.option("--views", type=click.Choice(["default", "fast"]), default="default", show_default=True,
              help="simulated views of each reference image for local features: fast = fewer, smaller views, "
                   "about half the extraction time (recall within noise of the default on one 270-photo sample)")
@click.option("--index-type", type=click.Choice(["auto", "flat", "ivf-sq8", "ivf-fp16"]), default="auto",
              show_default=True,
              help="CLIP vector index: auto = exact up to 50,000 images, IVF with fp16 codes above "
                   "(recall@10 >= 0.98 against exact at 1 M); flat/ivf-* force one")
@click.option("--no-calibrate", is_flag=True,
              help="keep the calibration shipped with pinid (by default a catalogue of 50 pins or more is "
                   "calibrated on simulated photos of its own images, as `pinid calibrate` does)")
@click.option("--calibrate-photos", type=click.IntRange(min=3), default=None, metavar="N",
              help="simulated photos to calibrate on [default: 300]")
@_device_option
@_offline_option
@_threads_option
@_ray_option_group
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def build_index(catalogue: Path, output: str, encoder_kind: str, model: str | None, pretrained: str | None,
                batch_size: int, workers: int, cache_dir: Path | None, reset_cache: bool, views: str,
                index_type: str, no_calibrate: bool,
                calibrate_photos: int | None, device: str, offline: bool | None, threads: int | None,
                ray_address: str | None, ray_workers: int | None, ray_gpus: float, quiet: bool) -> None:
    """Index a CATALOGUE (folder of pin folders, or CSV/JSONL manifest): CLIP vectors and local features.

    A catalogue of 50 pins or more is then calibrated on simulated photos of its
    own reference images (about 4 minutes for 2,000 pins on 2 cores; --no-calibrate
    skips it). The index is complete before that starts: until the calibration
    replaces its manifest in one step, it answers with the shipped calibration.

    With --ray, hashing, decoding, CLIP encoding and local features run on a Ray
    cluster, into the --cache folder (default: pinid-build-cache beside the
    index); the index itself is written here, the same as without --ray.
    """
    from .catalogue import read_catalogue
    from .encoder import Encoder
    from .errors import InputError
    from .index import PinIndex
    from .identify.recogniser import LocalConfig
    from .index.build import check_output
    from .local.features import FeatureConfig

    _set_threads(threads)
    if encoder_kind == "local" and (model or pretrained):
        raise InputError("--encoder local uses no model: drop --model and --pretrained")
    check_output(output, catalogue)  # before the catalogue is read or the model loaded: bad -o costs nothing
    ray_options = _ray_options_of(ray_address, ray_workers, ray_gpus, batch_size, encoder_kind=encoder_kind)
    records = read_catalogue(catalogue)
    with ExitStack() as stack:
        if ray_options is not None:  # connect before the model loads: a bad address costs nothing
            stack.enter_context(_ray_session(ray_options, quiet))
        encoder = None
        cache = feature_cache = None
        if encoder_kind == "clip":
            spec = _requested_spec(model, pretrained)
            encoder = Encoder.load(spec, device=device, offline=offline)
        config = LocalConfig(features=FeatureConfig.fast() if views == "fast" else FeatureConfig())
        if ray_options is not None and cache_dir is None:
            cache_dir = Path(output).expanduser().absolute().parent / "pinid-build-cache"
            click.echo(f"Ray results are kept in {cache_dir} (--cache): a rerun resumes from them", err=True)
        if cache_dir is not None:
            cache, feature_cache = _open_caches(cache_dir, encoder, config.features, reset=reset_cache)
            stack.callback(feature_cache.close)
        on_progress = stack.enter_context(_stages(quiet))
        if ray_options is None:
            index = PinIndex.build(records, output, encoder, batch_size=batch_size, workers=workers,
                                   cache=cache, feature_cache=feature_cache, config=config,
                                   index_type=index_type, on_progress=on_progress)
        else:
            from .cluster import build_index_on_ray
            from .index.build import BuildOptions

            options = BuildOptions(batch_size, workers, cache, config, index_type, feature_cache)
            built = build_index_on_ray(records, output, encoder, options, ray_options, offline=offline,
                                       on_progress=on_progress)
            index = PinIndex.load(output, encoder=encoder)
            index.build_report = built
    report = index.build_report
    assert report is not None
    described = "none (local features only)" if encoder is None else encoder.spec.describe()
    click.echo(f"Built {output}: {report.pins} pins, {report.images} images, encoder {described}, "
               f"{report.seconds:.1f} s ({report.images_per_second:.1f} images/s)")
    if report.skipped:
        click.echo(f"Skipped {len(report.skipped)}:")
        for where, why in report.skipped:
            click.echo(f"  {where}: {why}")
    if not no_calibrate:
        _calibrate_new_index(index, calibrate_photos, workers, quiet)


def _calibrate_new_index(index: Any, photos: int | None, workers: int, quiet: bool) -> None:
    """Self-calibrate a fresh index of enough pins; a failure keeps the shipped calibration (one line, exit 0)."""
    import time

    from .errors import InputError
    from .evaluation.calibrate import calibrate_simulated
    from .evaluation.simulate import SELF_CALIBRATE_MIN_PINS, SIMULATED_PHOTOS

    if len(index) < SELF_CALIBRATE_MIN_PINS:
        click.echo(f"Calibration: the one shipped with pinid (self-calibration needs {SELF_CALIBRATE_MIN_PINS} "
                   "pins or more; `pinid calibrate --photos` fits on your own labelled photos)")
        return
    started = time.perf_counter()
    try:
        with _stages(quiet) as on_progress:
            report = calibrate_simulated(index, photos=photos or SIMULATED_PHOTOS, workers=workers,
                                         on_progress=on_progress)
    except InputError as exc:
        click.echo(f"Calibration: kept the one shipped with pinid; {plain(str(exc))}")
        return
    calibration = report.calibration
    click.echo(f"Calibrated on {plain(calibration.fitted_on)}; self-test "
               f"{_describe_self_test(calibration.self_test or {})}; {time.perf_counter() - started:.1f} s")
    for where, why in report.skipped[:5]:
        click.echo(f"  skipped {plain(where)}: {plain(why)}")
    if len(report.skipped) > 5:
        click.echo(f"  ... and {len(report.skipped) - 5} more skipped")


@cli.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-i", "--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="index directory made by `pinid build-index`")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="number of pins to list per photo")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--multi", is_flag=True, help="find every catalogue pin in each photo (boards, lanyards), "
                                            "with its outline")
@click.option("--annotate", "annotate_path", type=click.Path(), default=None, metavar="OUT.png",
              help="with --multi and one photo: draw the pins found on it into this PNG")
@click.option("--no-verify", is_flag=True, help="rank by CLIP similarity alone (no geometry, colour or confidence)")
@click.option("--candidates", type=click.IntRange(min=1, max=500), default=None,
              help="tries (reference image, orientation) verified per photo [default: the index's setting, 80]")
@_model_option
@_pretrained_option
@_device_option
@_offline_option
@_threads_option
def identify(photos: tuple[Path, ...], index_dir: Path, k: int, as_json: bool, multi: bool,
             annotate_path: str | None, no_verify: bool, candidates: int | None, model: str | None,
             pretrained: str | None, device: str, offline: bool | None, threads: int | None) -> None:
    """Name the pins in one or more PHOTOS. The index's own encoder is used unless --model is given.

    Each answer carries a calibrated confidence; under the index's threshold the
    photo is reported as an unknown pin, with the nearest candidates listed.
    """
    from .encoder import Encoder, EncoderSpec
    from .errors import InputError
    from .index import PinIndex

    _set_threads(threads)
    if annotate_path is not None and (not multi or len(photos) != 1):
        raise InputError("--annotate needs --multi and exactly one photo")
    if annotate_path is not None:  # before any work: not the photo, not a device, somewhere writable
        from .identify.annotate import check_annotation_target

        check_annotation_target(annotate_path, photos[0])
    if multi and no_verify:
        raise InputError("--multi finds pins by verification; it cannot be combined with --no-verify")
    encoder: Any = "manifest"
    if model or pretrained:
        from .index.format import read_manifest

        recorded = read_manifest(index_dir).encoder
        if recorded is None:
            raise InputError(f"index {index_dir} has local features only: --model/--pretrained do not apply")
        encoder = Encoder.load(EncoderSpec(model or recorded["model"], pretrained), device=device, offline=offline)
    index = PinIndex.load(index_dir, encoder=encoder, device=device, offline=offline)
    if multi:
        _identify_multi(index, photos, as_json, annotate_path)
        return
    with _stages(quiet=len(photos) < 16) as on_progress:
        results = index.identify_many(list(photos), k=k, verify=not no_verify, candidates=candidates,
                                      on_progress=on_progress)
    if as_json:
        click.echo(dumps([result.to_dict() for result in results], indent=2))
    else:
        for result in results:
            _print_table(result)
    failed = [r for r in results if r.error]
    for result in failed:
        click.echo(f"pinid: error: {plain(result.query)}: {plain(result.error)}", err=True)
    if failed:
        sys.exit(EXIT_IMAGE_ERROR)


@cli.command()
@click.argument("query", nargs=-1, required=True)
@click.option("-i", "--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="index directory made by `pinid build-index` (with CLIP, not --encoder local)")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="number of pins to list")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_device_option
@_offline_option
@_threads_option
def search(query: tuple[str, ...], index_dir: Path, k: int, as_json: bool, device: str, offline: bool | None,
           threads: int | None) -> None:
    """Find pins by a description, e.g. pinid search "gold fox with a red rim" -i INDEX.

    Pins are ranked by CLIP text-image similarity: the cosine of the text with
    each pin's best reference image. The model's text side is loaded for this
    command only; a text longer than the model's context is truncated.
    """
    from .encoder.clip import check_text_query
    from .index import PinIndex

    _set_threads(threads)
    text = check_text_query(" ".join(query))  # before the model is loaded: an empty query costs nothing
    index = PinIndex.load(index_dir, device=device, offline=offline)
    matches = index.search_text(text, k=k)
    if as_json:
        click.echo(dumps({"query": text, "matches": [match.to_dict() for match in matches]}, indent=2))
        return
    click.echo(f'pins for "{plain(text)}", by CLIP text-image similarity')
    width = max([len(plain(m.pin_id)) for m in matches] + [6])
    click.echo(f"  {'rank':>4}  {'pin id':<{width}}  {'cosine':>6}  name")
    for match in matches:
        click.echo(f"  {match.rank:>4}  {plain(match.pin_id):<{width}}  {match.similarity:6.3f}  {plain(match.name)}")


def _change_options(function: Any) -> Any:
    """The options `pinid add` and `pinid update` share with build-index."""
    for option in reversed([
            _model_option, _pretrained_option,
            click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
            click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                         help="threads for image decoding and local features"),
            click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
                         help="cache folder (as for build-index): images it knows are not encoded or "
                              "extracted again"),
            _device_option, _offline_option, _threads_option,
            click.option("-q", "--quiet", is_flag=True, help="no progress bar")]):
        function = option(function)
    return function


@cli.command("add")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("catalogue", type=click.Path(path_type=Path))
@_change_options
def add_command(index_dir: Path, catalogue: Path, **options: Any) -> None:
    """Add CATALOGUE's new pins, and new images of pins already in INDEX_DIR, without a rebuild.

    Only new images are encoded and their local features extracted; pins and
    images already in the index are left as they are (`pinid update` replaces
    them). The change is written as a new generation of the index, in one
    atomic step: readers see the index before it or after it, never between.
    """
    _change(index_dir, "add", catalogue, **options)


@cli.command("update")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("catalogue", type=click.Path(path_type=Path))
@_change_options
def update_command(index_dir: Path, catalogue: Path, **options: Any) -> None:
    """Replace the name, metadata and images of every pin CATALOGUE lists (new pins are added).

    Images whose content is already in the index are kept without re-encoding;
    a pin's images that the catalogue no longer lists are dropped. A pin none of
    whose new images can be read is left as it was (and listed).
    """
    _change(index_dir, "update", catalogue, **options)


@cli.command("remove")
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.argument("pin_ids", nargs=-1, required=True)
def remove_command(index_dir: Path, pin_ids: tuple[str, ...]) -> None:
    """Remove pins (by PIN_IDS) and all their images from INDEX_DIR, as one new generation.

    An id not in the index is an error and nothing is removed.
    """
    from .index.change import change_index

    report = change_index(index_dir, "remove", remove=list(pin_ids))
    click.echo(f"Removed {len(report.pins_removed)} pins ({report.images_removed} images) from {plain(str(index_dir))}: "
               f"generation {report.generation}, {report.seconds:.1f} s")


def _change(index_dir: Path, action: str, catalogue: Path, *, model: str | None, pretrained: str | None,
            batch_size: int, workers: int, cache_dir: Path | None, device: str, offline: bool | None,
            threads: int | None, quiet: bool) -> None:
    from .catalogue import read_catalogue
    from .encoder import Encoder, EncoderSpec
    from .errors import InputError
    from .index.build import BuildOptions
    from .index.change import change_index, check_index_target

    _set_threads(threads)
    folder = check_index_target(index_dir)  # before the catalogue is read or the model loaded
    from .index.format import read_manifest

    if read_manifest(folder).encoder is None and (model or pretrained):
        raise InputError(f"index {index_dir} has local features only: --model/--pretrained do not apply")
    manifest = read_manifest(folder)
    recorded = manifest.encoder
    records = read_catalogue(catalogue)
    encoder = None
    cache = feature_cache = None
    if recorded is not None:
        spec = EncoderSpec(model or recorded["model"], pretrained if (model or pretrained) else recorded.get("pretrained"))
        encoder = Encoder.load(spec, device=device, offline=offline)
    if cache_dir is not None:
        cache, feature_cache = _open_caches(cache_dir, encoder, manifest.config().features, reset=False)
    try:
        with _stages(quiet) as on_progress:
            report = change_index(folder, action, catalogue=records, encoder=encoder,  # type: ignore[arg-type]
                                  options=BuildOptions(batch_size, workers, cache, feature_cache=feature_cache),
                                  on_progress=on_progress)
    finally:
        if feature_cache is not None:
            feature_cache.close()
    if not report.changed:
        click.echo(f"Nothing to {action} in {plain(str(index_dir))}: {report.unchanged} images already in it "
                   f"(generation {report.generation} unchanged)")
    else:
        parts = []
        if report.pins_added:
            parts.append(f"{len(report.pins_added)} new pins")
        if report.pins_replaced:
            parts.append(f"{len(report.pins_replaced)} pins replaced")
        parts.append(f"{report.images_added} images added")
        if report.images_removed:
            parts.append(f"{report.images_removed} dropped")
        if report.unchanged:
            parts.append(f"{report.unchanged} unchanged")
        click.echo(f"{'Added to' if action == 'add' else 'Updated'} {plain(str(index_dir))}: {', '.join(parts)}; "
                   f"generation {report.generation}, {report.seconds:.1f} s")
    _print_skipped(report.skipped)


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        click.echo(f"Skipped {len(skipped)}:")
        for where, why in skipped:
            click.echo(f"  {plain(where)}: {plain(why)}")


def _open_caches(cache_dir: Path, encoder: Any, features: Any, *, reset: bool) -> tuple[Any, Any]:
    """The embedding cache (CLIP indexes only) in CACHE_DIR, and the local-feature cache in CACHE_DIR/local-features."""
    from .encoder.cache import FEATURE_CACHE_DIR, EmbeddingCache
    from .local.cache import FeatureCache

    cache = EmbeddingCache.open(cache_dir, encoder.identity(), reset=reset) if encoder is not None else None
    return cache, FeatureCache.open(cache_dir / FEATURE_CACHE_DIR, features, reset=reset)


@cli.command()
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def info(index_dir: Path, as_json: bool) -> None:
    """Describe an index: encoder, counts, build time. Does not load the model."""
    from .index import PinIndex

    summary = PinIndex.load(index_dir, encoder=None).info()
    if as_json:
        click.echo(dumps(summary, indent=2))
        return
    encoder = summary["encoder"]
    lines = [f"index:      {plain(summary['path'])}",
             f"format:     {summary['format']} v{summary['format_version']} (pinid {summary['pinid_version']})",
             f"built:      {summary['created_at']}",
             f"pins:       {summary['counts']['pins']}",
             f"images:     {summary['counts']['images']}",
             f"generation: {summary['generation']}" + _describe_last_change(summary["changes"])]
    if encoder is None:
        lines.append("encoder:    none (local features only)")
    else:
        weights = encoder.get("weights_sha256") or "unknown"
        lines += [f"encoder:    {encoder['model']}" + (f" ({encoder['pretrained']})" if encoder.get("pretrained") else ""),
                  f"weights:    sha256 {weights[:16]}",
                  f"embedding:  {encoder['embedding_dim']} dims, {summary['vectors']['faiss_index']} "
                  f"({summary['vectors']['metric']})",
                  f"preprocess: {_describe_preprocess(encoder['preprocess'])}"]
    local = summary["local_features"]
    lines += [f"local:      {local['descriptors']} descriptors ({local['kind']}, at most {local['max_per_image']} "
              "per image)",
              f"confidence: unknown pin under {summary['calibration']['unknown_below']:.2f}; calibration "
              f"{plain(summary['calibration']['fitted_on'])}"]
    lines.append(f"ranking:    {_describe_weights(summary['calibration'])}")
    tested = summary["calibration"].get("self_test")
    if isinstance(tested, dict):
        lines.append(f"self-test:  {_describe_self_test(tested)}")
    lines.append(f"catalogue:  {plain(summary['catalogue']['source'])}")
    click.echo("\n".join(lines))


def _describe_last_change(changes: list[Any]) -> str:
    """`` (last change: add 2026-11-26T17:20:00+00:00, +3 pins, +5 images; 4 changes since the build)``."""
    if not changes or not isinstance(changes[-1], dict):
        return ""
    last = changes[-1]
    details = []
    for key, sign in (("pins_added", "+"), ("pins_replaced", "~"), ("pins_removed", "-")):
        count = last.get(key, {}).get("count", 0) if isinstance(last.get(key), dict) else 0
        if count:
            details.append(f"{sign}{count} pins")
    for key, sign in (("images_added", "+"), ("images_removed", "-")):
        if last.get(key):
            details.append(f"{sign}{last[key]} images")
    since = sum(1 for change in changes if isinstance(change, dict) and change.get("action") != "build")
    return (f" (last change: {plain(str(last.get('action')))} {plain(str(last.get('at')))}"
            + (f", {', '.join(details)}" if details else "") + f"; {since} change(s) recorded since the build)")


def _describe_weights(calibration: dict[str, Any]) -> str:
    """Each ranking feature's fitted weight, CLIP's first: whether this index's calibration trusts CLIP."""
    from .identify.confidence import Calibration

    weights = Calibration.from_dict(calibration).weights()
    second_order = sum(1 for name, weight in weights.items() if "*" in name and weight)
    clip = (f"CLIP margin {weights['clip_margin']:+.2f}, cosine {weights['clip_cosine']:+.2f}"
            if weights["clip_margin"] or weights["clip_cosine"] else "CLIP unused (weight 0)")
    return (f"{clip}; aligned {weights['aligned']:+.2f}, log inliers {weights['log_distinct_inliers']:+.2f}, "
            f"inlier ratio {weights['inlier_ratio']:+.2f}, colour {weights['colour_distance']:+.2f} per 10 Lab, "
            f"vote share {weights['vote_share']:+.2f}, glance {weights['glance']:+.2f}, "
            f"structure {weights['structure']:+.2f}"
            + (f"; and {second_order} products of inliers, colour, structure and glance" if second_order else ""))


def _describe_self_test(figures: dict[str, Any]) -> str:
    """``recall@1 0.920, AUROC 0.880 (on ...)`` from a calibration's self-test figures ("n/a" where one is missing).

    Simulated calibrations are scored on held-out photos (``scored_on`` says so);
    labelled ones on the photos they were fitted on.
    """
    def shown(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"

    scored_on = figures.get("scored_on")
    where = plain(scored_on) if isinstance(scored_on, str) and scored_on else "the photos it was fitted on"
    return f"recall@1 {shown(figures.get('recall_at_1'))}, AUROC {shown(figures.get('auroc'))} (on {where})"


@cli.command()
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--photos", "photos", default=None, type=click.Path(path_type=Path), metavar="LABELLED.csv",
              help="fit on your own labelled photos instead: CSV/JSONL with columns image,pin_id (images "
                   "relative to the file; an empty pin_id is a pin not in the catalogue)")
@click.option("--simulate", "simulate", type=click.IntRange(min=3), default=None, metavar="N",
              help="simulated phone photos of the catalogue's own reference images to fit on "
                   "[default: 300]")
@click.option("--seed", type=int, default=None, help="seed of the simulated photos [default: 0]")
@_device_option
@_offline_option
@_threads_option
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def calibrate(index_dir: Path, photos: Path | None, simulate: int | None, seed: int | None, device: str,
              offline: bool | None, threads: int | None, quiet: bool) -> None:
    """Refit INDEX_DIR's ranking and confidence; written into its manifest with its self-test figures.

    Without --photos it simulates phone photos of the catalogue's own reference
    images (tilt, light, blur, backgrounds, fingers), a quarter of them playing
    pins that are not in the catalogue, and scores the fit on a held-out third.
    The reference images are read where the catalogue was at build time.
    """
    from .errors import InputError
    from .evaluation.calibrate import calibrate as fit_on_photos
    from .evaluation.calibrate import calibrate_simulated
    from .evaluation.simulate import SIMULATED_PHOTOS
    from .index import PinIndex

    if photos is not None and (simulate is not None or seed is not None):
        raise InputError(f"--photos and {'--simulate' if simulate is not None else '--seed'} exclude each other: "
                         "fit on your labelled photos or on simulated ones")
    _set_threads(threads)
    index = PinIndex.load(index_dir, device=device, offline=offline)
    with _stages(quiet) as on_progress:
        if photos is None:
            report = calibrate_simulated(index, photos=simulate or SIMULATED_PHOTOS, seed=seed or 0,
                                         on_progress=on_progress)
        else:
            report = fit_on_photos(index, photos, on_progress=on_progress)
    for where, why in report.skipped[:20]:
        click.echo(f"  skipped {plain(where)}: {plain(why)}", err=True)
    if len(report.skipped) > 20:
        click.echo(f"  ... and {len(report.skipped) - 20} more skipped", err=True)
    what = "simulated photos" if photos is None else "photos"
    click.echo(f"Calibrated {index_dir}: {report.used} {what} used, {len(report.skipped)} skipped; self-test "
               f"{_describe_self_test(report.calibration.self_test or {})}")


@cli.command("eval")
@click.option("-i", "--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="index directory to score")
@click.option("--queries", "ground_truth", type=click.Path(path_type=Path), default=None,
              help="ground truth CSV/JSONL: query_id,image,pin_id,design,split")
@click.option("--boards", "boards_path", type=click.Path(path_type=Path), default=None,
              help="multi-pin ground truth (boards.jsonl): score `identify --multi`")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="score a seeded random sample of this many queries (and boards)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed for --sample")
@click.option("--no-verify", is_flag=True, help="score CLIP similarity alone (no open-set threshold unless given)")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None, callback=lambda c, p, v: _finite(v),
              help="open-set threshold: answers scoring under it count as 'unknown pin' [default: the index's "
                   "calibrated confidence threshold; with --no-verify none (scores are cosines), so only this "
                   "option gives one]")
@click.option("--failures", "failures_dir", type=click.Path(path_type=Path), default=None,
              help="write contact sheets of failed queries (PNG) to this folder")
@click.option("--json", "as_json", is_flag=True, help="print the full JSON result instead of the table")
@click.option("--output", "json_path", type=click.Path(path_type=Path), default=None,
              help="also write the JSON result to this file")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--latency-samples", type=click.IntRange(min=0), default=50, show_default=True,
              help="queries timed one by one for the latency rows")
@click.option("--candidates", type=click.IntRange(min=1, max=500), default=None,
              help="tries verified per photo, as `identify --candidates` (more: higher recall, slower) "
                   "[default: the index's setting, 80]")
@_device_option
@_offline_option
@_threads_option
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def evaluate_command(index_dir: Path, ground_truth: Path | None, boards_path: Path | None, sample: int | None,
                     seed: int, no_verify: bool, threshold: float | None, failures_dir: Path | None,
                     as_json: bool, json_path: Path | None, batch_size: int, latency_samples: int,
                     candidates: int | None, device: str, offline: bool | None, threads: int | None,
                     quiet: bool) -> None:
    """Score an index on ground truth: recall@k, MRR, colourways, open set, latency, boards."""
    from .errors import InputError
    from .evaluation.queries import read_queries, sample_queries
    from .evaluation.report import boards_markdown, metrics_markdown
    from .evaluation.run import EvaluationReport, evaluate
    from .index import PinIndex

    _set_threads(threads)
    if ground_truth is None and boards_path is None:
        raise InputError("nothing to score: give --queries, --boards or both")
    queries = read_queries(ground_truth) if ground_truth is not None else []
    if sample is not None:
        queries = sample_queries(queries, sample, seed)
    index = PinIndex.load(index_dir, device=device, offline=offline)
    report = EvaluationReport({})
    if queries:
        with _stages(quiet) as on_progress:
            report = evaluate(index, queries, batch_size=batch_size, threshold=threshold, verify=not no_verify,
                              latency_samples=latency_samples, candidates=candidates, on_progress=on_progress)
    if boards_path is not None:
        from .evaluation.boards import evaluate_boards, read_boards

        boards = read_boards(boards_path, sample=sample, seed=seed)
        with _stages(quiet) as on_progress:
            report.metrics["boards"] = evaluate_boards(index, boards, on_progress=on_progress)
    if json_path:
        json_path.write_text(report.to_json() + "\n", encoding="utf-8")
    if as_json:
        click.echo(report.to_json())
    else:
        if queries:
            click.echo(metrics_markdown(report.metrics))
        if "boards" in report.metrics:
            click.echo(boards_markdown(report.metrics["boards"]))
    if failures_dir and queries:
        from .evaluation.contact_sheet import failed_outcomes, write_failure_sheets

        used_threshold = report.metrics["open_set"]["at_threshold"]
        failed = failed_outcomes(report.outcomes, used_threshold["threshold"] if used_threshold else None)
        sheets = write_failure_sheets(failed, index, failures_dir)
        click.echo(f"{len(failed)} failures; {len(sheets)} contact sheet(s) in {failures_dir}", err=True)


@cli.command()
@click.argument("listings", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="write the rows here (CSV, or JSON with --json) [default: print them]")
@click.option("--mode", type=click.Choice(["photo", "pin"]), default="photo", show_default=True,
              help="photo: re-uploads of one picture; pin: any listings of the same pin")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None, callback=lambda c, p, v: _finite(v),
              help="minimum cosine that relates two listings [default: 0.97 photo, 0.90 pin; "
                   "1 = photo hash only]")
@click.option("--phash-distance", type=click.IntRange(0, 64), default=12, show_default=True,
              help="maximum photo-hash distance, in bits of 64, for two images to be the same photo")
@click.option("--against", "index_dir", type=click.Path(path_type=Path), default=None, metavar="INDEX_DIR",
              help="report which LISTINGS are new and which duplicate an image of this index")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="embedding cache folder [default: pinid-dedup-cache beside the output]")
@click.option("--reset-cache", is_flag=True, help="discard the cache (e.g. made by another encoder) first")
@click.option("--json", "as_json", is_flag=True, help="JSON rows instead of CSV")
@click.option("--encoder", "encoder_kind", type=click.Choice(["clip", "local"]), default="clip", show_default=True,
              help="clip: CLIP embeddings; local: no model at all (photo hashes, and in pin mode local features "
                   "that confirm each pair geometrically)")
@_model_option
@_pretrained_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_device_option
@_offline_option
@_threads_option
@_ray_option_group
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def dedup_command(listings: Path, output: Path | None, mode: str, threshold: float | None, phash_distance: int,
                  index_dir: Path | None, cache_dir: Path | None, reset_cache: bool, as_json: bool,
                  encoder_kind: str, model: str | None, pretrained: str | None, batch_size: int, device: str,
                  offline: bool | None, threads: int | None, ray_address: str | None, ray_workers: int | None,
                  ray_gpus: float, quiet: bool) -> None:
    """Group duplicate LISTINGS (folder, or CSV/JSONL with listing_id,image): one row per listing.

    With --ray, hashing, decoding and encoding (and, in pin mode with --encoder
    local, local features) run on a Ray cluster; the groups are the same.
    """
    from .dedup import ROW_FIELDS, DedupOptions, dedup, read_listings
    from .dedup.rows import format_rows, write_rows
    from .encoder.cache import EmbedOptions, EmbeddingCache
    from .encoder import Encoder
    from .errors import InputError
    from .tables import clean_text

    _set_threads(threads)
    if encoder_kind == "local":
        if model or pretrained:
            raise InputError("--encoder local uses no model: drop --model and --pretrained")
        if threshold is not None:
            raise InputError("--encoder local has no embeddings to compare: drop --threshold (photos are related "
                             "by photo hash and, in pin mode, by verified local features)")
        if index_dir is not None:
            raise InputError("--against needs an index's CLIP embeddings: drop --encoder local")
    ray_options = _ray_options_of(ray_address, ray_workers, ray_gpus, batch_size, encoder_kind=encoder_kind)
    if ray_options is not None and index_dir is not None:
        raise InputError("--ray does not run --against yet: drop one of them")
    skipped: list[tuple[str, str]] = []
    items = read_listings(listings, skipped)
    for where, why in skipped:
        click.echo(f"  skipped {where}: {why}", err=True)
    options = DedupOptions(mode=mode, min_cosine=threshold,  # type: ignore[arg-type]
                           max_phash_distance=phash_distance)
    embed_options = EmbedOptions(batch_size=batch_size)
    cache_dir = cache_dir or (output.parent if output else listings.parent) / "pinid-dedup-cache"
    with ExitStack() as stack:
        if ray_options is not None:
            stack.enter_context(_ray_session(ray_options, quiet))
        on_progress = stack.enter_context(_stages(quiet))
        if index_dir is not None:
            from .dedup import AGAINST_FIELDS, match_against
            from .dedup.against import against_encoder
            from .index import PinIndex

            index = PinIndex.load(index_dir, device=device, offline=offline)
            cache = EmbeddingCache.open(cache_dir, against_encoder(index).identity(), reset=reset_cache)
            report: Any = match_against(index, items, cache, options, embed_options, on_progress)
            fields = AGAINST_FIELDS
        elif encoder_kind == "local":
            from .dedup.local_pairs import PhotoHashOnly, dedup_local, open_feature_cache

            cache = EmbeddingCache.open(cache_dir, PhotoHashOnly().identity(), reset=reset_cache)
            with open_feature_cache(cache_dir, reset=reset_cache) if mode == "pin" else nullcontext() as features:
                if ray_options is None:
                    report = dedup_local(items, cache, features, options, embed_options=embed_options,
                                         on_progress=on_progress)
                else:
                    from .cluster import dedup_on_ray

                    report = dedup_on_ray(items, PhotoHashOnly(), cache, options, embed_options, ray_options,
                                          feature_cache=features, on_progress=on_progress)
            fields = ROW_FIELDS
        else:
            encoder = Encoder.load(_requested_spec(model, pretrained), device=device, offline=offline)
            cache = EmbeddingCache.open(cache_dir, encoder.identity(), reset=reset_cache)
            if ray_options is None:
                report = dedup(items, encoder, cache, options, embed_options, on_progress)
            else:
                from .cluster import dedup_on_ray
                from .cluster.jobs import encoder_loader

                report = dedup_on_ray(items, encoder, cache, options, embed_options, ray_options,
                                      load_encoder=encoder_loader(encoder, gpus_per_worker=ray_gpus, offline=offline),
                                      on_progress=on_progress)
            fields = ROW_FIELDS
    if output is not None:
        write_rows(report.rows, output, fields, as_json=as_json)
    else:
        click.echo(format_rows(report.rows, fields, as_json=as_json), nl=False)
    unreadable = [row for row in report.rows if row.error]
    for row in unreadable[:20]:
        click.echo(f"  unreadable {clean_text(row.listing_id)} ({clean_text(row.image)}): {clean_text(row.error)}",
                   err=True)
    if len(unreadable) > 20:
        click.echo(f"  ... and {len(unreadable) - 20} more unreadable (see the 'error' column)", err=True)
    click.echo(report.summary() + (f"; wrote {output}" if output else ""), err=output is None)


@contextmanager
def _stages(quiet: bool) -> Iterator[Any]:
    """One tqdm bar per stage of a long job (hashing, encoding, neighbours, ...): the one progress shape.

    Bars show on a terminal and stay silent in logs and pipes (tqdm's ``disable=None``).
    """
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[stage] = tqdm(total=total, desc=stage, disable=True if quiet else None, file=sys.stderr,
                               dynamic_ncols=True)
        bar = bars[stage]
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()


@cli.command()
@click.option("-i", "--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="index directory made by `pinid build-index`")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0 exposes the service to your network)")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="identification threads (the model is loaded once and shared)")
@click.option("--queue", type=click.IntRange(min=0), default=16, show_default=True,
              help="requests that may wait for a worker; beyond them the answer is 503 with Retry-After")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.001), default=20.0, show_default=True,
              help="largest upload accepted (413 above)")
@click.option("--admin-token-file", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="file holding the token (16+ characters) that admin routes require; without it they answer 401")
@click.option("--uploads-dir", type=click.Path(path_type=Path), default=None,
              help="where pins added through the admin API keep their images [default: INDEX-uploads beside "
                   "the index, with --admin-token-file]")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="allow browser pages from this origin to call the API (repeatable) [default: none]")
@_device_option
@_offline_option
@_threads_option
def serve(index_dir: Path, host: str, port: int, workers: int, queue: int, max_upload_mb: float,
          admin_token_file: Path | None, uploads_dir: Path | None, cors_origins: tuple[str, ...], device: str,
          offline: bool | None, threads: int | None) -> None:
    """Serve the HTTP API and the web page for one index (needs the `serve` extra).

    The index and its model are loaded once; --workers threads answer, and up to
    --queue more requests wait. The page is at /, the API's documentation at /docs.
    SIGTERM or Ctrl-C finish the requests in flight, then stop.
    """
    from .serve.run import serve_index

    serve_index(index_dir, host=host, port=port, workers=workers, queue=queue, max_upload_mb=max_upload_mb,
                admin_token_file=admin_token_file, uploads_dir=uploads_dir, cors_origins=cors_origins,
                device=device, offline=offline, threads=threads, echo=lambda line: click.echo(line, err=True))


@cli.command("export-model")
@click.argument("model")
@click.option("--pretrained", default=None, metavar="TAG|FILE", help="pretrained tag or weights file")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="folder to write")
def export_model(model: str, pretrained: str | None, output: Path) -> None:
    """Save MODEL's weights and config as a local-dir: folder, to copy to an offline machine.

    The folder keeps every setting of the weights (preprocessing, QuickGELU), so an
    index built with MODEL accepts it as the same encoder.
    """
    from .encoder import save_local_dir
    from .encoder.weights import check_export_folder
    from .errors import InputError

    check_export_folder(output)  # before the weights are loaded: a bad -o costs nothing
    try:
        folder = save_local_dir(output, model, pretrained)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from exc
    click.echo(f"Wrote {plain(str(folder))}; use it with --model local-dir:{plain(str(folder.resolve()))}")


def _identify_multi(index: Any, photos: tuple[Path, ...], as_json: bool, annotate_path: str | None) -> None:
    from .identify.confidence import percent
    from .errors import ImageError

    answers, failed = [], []
    for photo in photos:
        try:
            answers.append((photo, index.identify_multi(photo), None))
        except ImageError as exc:
            failed.append(str(exc))
            answers.append((photo, None, exc.reason))
    if as_json:
        click.echo(dumps([{"query": str(photo), "error": error, "pins": [f.to_dict() for f in found or []]}
                          for photo, found, error in answers], indent=2))
    else:
        for photo, found, _ in answers:
            if found is None:
                continue
            click.echo(f"{plain(str(photo))}: {len(found)} pin(s) found")
            for item in found:
                corners = " ".join(f"{x:.0f},{y:.0f}" for x, y in item.polygon)
                click.echo(f"  {percent(item.confidence):>5}  {plain(item.match.pin_id)}  {plain(item.match.name)}"
                           f"  [{corners}]")
    if annotate_path is not None and answers[0][1] is not None:
        from .identify.annotate import write_annotated

        write_annotated(photos[0], answers[0][1], annotate_path)
        click.echo(f"Wrote {plain(annotate_path)}", err=True)
    for message in failed:
        click.echo(f"pinid: error: {plain(message)}", err=True)
    if failed:
        sys.exit(EXIT_IMAGE_ERROR)


def _print_table(result: Any) -> None:
    from .identify.confidence import percent

    click.echo(plain(result.query))
    if result.error:
        click.echo("  (could not be read)")
        return
    if result.confidence is not None:
        if result.unknown:
            click.echo(f"  unknown pin: not in the catalogue as far as pinid can tell (confidence "
                       f"{percent(result.confidence)}); nearest candidates:")
        elif result.matches:
            best = result.matches[0]
            click.echo(f"  {plain(best.name)} ({plain(best.pin_id)}), confidence {percent(result.confidence)}")
    width = max([len(plain(m.pin_id)) for m in result.matches] + [6])
    verified = result.confidence is not None
    # the CLIP cosine beside the geometry and colour, where the index has CLIP ("-": not in CLIP's top list)
    clip = verified and any(m.similarity is not None for m in result.matches)
    click.echo(f"  {'rank':>4}  {'pin id':<{width}}  {'score':>6}  " + ("cosine  " if clip else "")
               + ("inliers  colour  " if verified else "") + "name")
    for match in result.matches:
        extra = ""
        if clip:
            extra += "     -  " if match.similarity is None else f"{match.similarity:6.3f}  "
        if verified:
            colour = "-" if match.colour_distance is None else f"{match.colour_distance:.1f}"
            extra += f"{match.inliers:>7}  {colour:>6}  "
        click.echo(f"  {match.rank:>4}  {plain(match.pin_id):<{width}}  {match.score:6.3f}  {extra}{plain(match.name)}")


def _finite(value: float | None) -> float | None:
    """click's FloatRange lets NaN through (every comparison with NaN is false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number in the range")
    return value


def _describe_preprocess(preprocess: dict[str, Any]) -> str:
    size = preprocess.get("size")
    size_text = "x".join(map(str, size)) if isinstance(size, list) else str(size)
    return f"{size_text} px, {preprocess.get('resize_mode')} resize, {preprocess.get('interpolation')}"


def _requested_spec(model: str | None, pretrained: str | None) -> Any:
    """The default model comes with its default weights; a model named without a tag gets none."""
    from .encoder.weights import DEFAULT_MODEL, DEFAULT_PRETRAINED, EncoderSpec

    return EncoderSpec(model or DEFAULT_MODEL, pretrained if pretrained is not None or model else DEFAULT_PRETRAINED)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn errors into one line and an exit code."""
    previous = _catch_sigterm()
    try:
        _run(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _catch_sigterm() -> Any:
    """Make SIGTERM raise ``_Terminated`` in the main thread; returns the handler to restore (None: unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        raise _Terminated

    return signal.signal(signal.SIGTERM, terminated)


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="pinid", standalone_mode=False)
    except PinidError as exc:
        click.echo(f"pinid: error: {plain(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors too: one line, like every other error
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        click.echo(f"pinid: error: {plain(exc.format_message())}{hint}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("pinid: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except _Terminated:
        click.echo("pinid: interrupted", err=True)
        sys.exit(EXIT_TERMINATED)


__all__ = ["cli", "main"]
