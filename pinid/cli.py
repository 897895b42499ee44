"""The `pinid` command: parse arguments, show progress, print results.

All work happens in the library; every ``PinidError`` becomes one line on
stderr and the exit code of its class (see README, "Exit codes").
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from . import __version__
from .errors import PinidError

EXIT_IMAGE_ERROR = 3
EXIT_INTERRUPTED = 130

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pinid")
def cli() -> None:
    """Which pin is this? Identify enamel pins from photos against a reference catalogue."""


@cli.command("build-index")
@click.argument("catalogue", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="index directory to create or replace (atomically)")
@_model_option
@_pretrained_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="embedding cache folder: rebuilds encode only new or changed images, "
                   "and an interrupted build resumes")
@click.option("--reset-cache", is_flag=True, help="discard the cache (e.g. made by another encoder) first")
@_device_option
@_offline_option
@_threads_option
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def build_index(catalogue: Path, output: Path, model: str | None, pretrained: str | None, batch_size: int,
                cache_dir: Path | None, reset_cache: bool, device: str, offline: bool | None,
                threads: int | None, quiet: bool) -> None:
    """Encode a CATALOGUE (folder of pin folders, or CSV/JSONL manifest) into an index."""
    from .catalogue import read_catalogue
    from .encoder import Encoder
    from .index import PinIndex

    _set_threads(threads)
    records = read_catalogue(catalogue)
    spec = _requested_spec(model, pretrained)
    encoder = Encoder.load(spec, device=device, offline=offline)
    cache = None
    if cache_dir is not None:
        from .embedding_cache import EmbeddingCache

        cache = EmbeddingCache.open(cache_dir, encoder.identity(), reset=reset_cache)
    with _progress(records.image_count, "encoding", quiet) as advance:
        index = PinIndex.build(records, output, encoder, batch_size=batch_size, cache=cache, on_progress=advance)
    report = index.build_report
    assert report is not None
    click.echo(f"Built {output}: {report.pins} pins, {report.images} images, encoder {spec.describe()}, "
               f"{report.seconds:.1f} s ({report.images_per_second:.1f} images/s)")
    if report.skipped:
        click.echo(f"Skipped {len(report.skipped)}:")
        for where, why in report.skipped:
            click.echo(f"  {where}: {why}")


@cli.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-i", "--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="index directory made by `pinid build-index`")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=5, show_default=True,
              help="number of pins to list per photo")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@_model_option
@_pretrained_option
@_device_option
@_offline_option
@_threads_option
def identify(photos: tuple[Path, ...], index_dir: Path, k: int, as_json: bool, model: str | None,
             pretrained: str | None, device: str, offline: bool | None, threads: int | None) -> None:
    """Name the pins in one or more PHOTOS. The index's own encoder is used unless --model is given."""
    from .encoder import Encoder, EncoderSpec
    from .index import PinIndex

    _set_threads(threads)
    encoder: Any = "manifest"
    if model or pretrained:
        from .index import read_manifest

        recorded = read_manifest(index_dir)["encoder"]
        encoder = Encoder.load(EncoderSpec(model or recorded["model"], pretrained), device=device, offline=offline)
    index = PinIndex.load(index_dir, encoder=encoder, device=device, offline=offline)
    with _progress(len(photos), "identifying", quiet=len(photos) < 64) as advance:
        results = index.identify_many(list(photos), k=k, on_progress=advance)
    if as_json:
        click.echo(json.dumps([{"query": r.query, "error": r.error, "matches": [m.to_dict() for m in r.matches]}
                               for r in results], indent=2, ensure_ascii=False))
    else:
        for result in results:
            _print_table(result)
    failed = [r for r in results if r.error]
    for result in failed:
        click.echo(f"pinid: error: {result.error}", err=True)
    if failed:
        sys.exit(EXIT_IMAGE_ERROR)


@cli.command()
@click.argument("index_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def info(index_dir: Path, as_json: bool) -> None:
    """Describe an index: encoder, counts, build time. Does not load the model."""
    from .index import PinIndex

    summary = PinIndex.load(index_dir, encoder=None).info()
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    encoder = summary["encoder"]
    weights = encoder.get("weights_sha256") or "unknown"
    click.echo(f"index:      {summary['path']}\n"
               f"format:     {summary['format']} v{summary['format_version']} (pinid {summary['pinid_version']})\n"
               f"built:      {summary['created_at']}\n"
               f"pins:       {summary['counts']['pins']}\n"
               f"images:     {summary['counts']['images']}\n"
               f"encoder:    {encoder['model']}" + (f" ({encoder['pretrained']})" if encoder.get("pretrained") else "")
               + f"\nweights:    sha256 {weights[:16]}\n"
               f"embedding:  {encoder['embedding_dim']} dims, {summary['vectors']['faiss_index']} "
               f"({summary['vectors']['metric']})\n"
               f"preprocess: {_describe_preprocess(encoder['preprocess'])}\n"
               f"catalogue:  {summary['catalogue']['source']}")


@cli.command("eval")
@click.option("-i", "--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="index directory to score")
@click.option("--queries", "ground_truth", required=True, type=click.Path(path_type=Path),
              help="ground truth CSV/JSONL: query_id,image,pin_id,design,split")
@click.option("--threshold", type=float, default=None,
              help="operating threshold for open-set metrics [default: the index's own, if any]")
@click.option("--failures", "failures_dir", type=click.Path(path_type=Path), default=None,
              help="write contact sheets of failed queries (PNG) to this folder")
@click.option("--json", "as_json", is_flag=True, help="print the full JSON result instead of the table")
@click.option("--output", "json_path", type=click.Path(path_type=Path), default=None,
              help="also write the JSON result to this file")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--latency-samples", type=click.IntRange(min=0), default=50, show_default=True,
              help="queries timed one by one for the latency rows")
@_device_option
@_offline_option
@_threads_option
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def evaluate_command(index_dir: Path, ground_truth: Path, threshold: float | None, failures_dir: Path | None,
                     as_json: bool, json_path: Path | None, batch_size: int, latency_samples: int, device: str,
                     offline: bool | None, threads: int | None, quiet: bool) -> None:
    """Score an index on ground-truth queries: recall@k, MRR, colourways, open set, latency."""
    from .evaluate import evaluate, read_queries
    from .index import PinIndex

    _set_threads(threads)
    queries = read_queries(ground_truth)
    index = PinIndex.load(index_dir, device=device, offline=offline)
    with _progress(len(queries), "querying", quiet) as advance:
        report = evaluate(index, queries, batch_size=batch_size, threshold=threshold,
                          latency_samples=latency_samples, on_progress=advance)
    if json_path:
        json_path.write_text(report.to_json() + "\n", encoding="utf-8")
    click.echo(report.to_json() if as_json else report.to_markdown())
    if failures_dir:
        from .contact_sheet import failed_outcomes, write_failure_sheets

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
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None,
              help="cosine needed to relate two listings [default: 0.97 photo, 0.90 pin; "
                   "1 = photo hash only]")
@click.option("--phash-distance", type=click.IntRange(0, 64), default=12, show_default=True,
              help="photo-hash bits (of 64) within which two images are the same photo")
@click.option("--against", "index_dir", type=click.Path(path_type=Path), default=None, metavar="INDEX_DIR",
              help="report which LISTINGS are new and which duplicate an image of this index")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="embedding cache folder [default: pinid-dedup-cache beside the output]")
@click.option("--reset-cache", is_flag=True, help="discard the cache (e.g. made by another encoder) first")
@click.option("--json", "as_json", is_flag=True, help="JSON rows instead of CSV")
@_model_option
@_pretrained_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_device_option
@_offline_option
@_threads_option
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def dedup_command(listings: Path, output: Path | None, mode: str, threshold: float | None, phash_distance: int,
                  index_dir: Path | None, cache_dir: Path | None, reset_cache: bool, as_json: bool,
                  model: str | None, pretrained: str | None, batch_size: int, device: str, offline: bool | None,
                  threads: int | None, quiet: bool) -> None:
    """Group duplicate LISTINGS (folder, or CSV/JSONL with listing_id,image): one row per listing."""
    from .dedup import ROW_FIELDS, DedupOptions, EmbedOptions, dedup, read_listings, write_rows
    from .embedding_cache import EmbeddingCache
    from .encoder import Encoder

    _set_threads(threads)
    items = read_listings(listings)
    options = DedupOptions(mode=mode, threshold=threshold, phash_distance=phash_distance)  # type: ignore[arg-type]
    embed_options = EmbedOptions(batch_size=batch_size)
    cache_dir = cache_dir or (output.parent if output else listings.parent) / "pinid-dedup-cache"
    with _stages(quiet) as on_progress:
        if index_dir is not None:
            from .dedup_against import AGAINST_FIELDS, match_against
            from .index import PinIndex

            index = PinIndex.load(index_dir, device=device, offline=offline)
            assert index.encoder is not None
            cache = EmbeddingCache.open(cache_dir, index.encoder.identity(), reset=reset_cache)
            report: Any = match_against(index, items, cache, options, embed_options, on_progress)
            fields = AGAINST_FIELDS
        else:
            encoder = Encoder.load(_requested_spec(model, pretrained), device=device, offline=offline)
            cache = EmbeddingCache.open(cache_dir, encoder.identity(), reset=reset_cache)
            report = dedup(items, encoder, cache, options, embed_options, on_progress)
            fields = ROW_FIELDS
    if output is not None:
        write_rows(report.rows, output, fields, as_json=as_json)
    elif as_json:
        click.echo(json.dumps([row.to_dict() for row in report.rows], indent=2, ensure_ascii=False))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.to_dict().items()} for row in report.rows)
    unreadable = [row for row in report.rows if row.error]
    for row in unreadable[:20]:
        click.echo(f"  unreadable {row.listing_id} ({row.image}): {row.error}", err=True)
    if len(unreadable) > 20:
        click.echo(f"  ... and {len(unreadable) - 20} more unreadable (see the 'error' column)", err=True)
    click.echo(report.summary() + (f"; wrote {output}" if output else ""), err=output is None)


@contextmanager
def _stages(quiet: bool) -> Iterator[Any]:
    """One tqdm bar per stage of a long job (hashing, encoding, neighbours, ...)."""
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


@cli.command("export-model")
@click.argument("model")
@click.option("--pretrained", default=None, metavar="TAG|FILE", help="pretrained tag or weights file")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="folder to write")
def export_model(model: str, pretrained: str | None, output: Path) -> None:
    """Save MODEL's weights and config as a local-dir: folder, to copy to an offline machine."""
    from .encoder import save_local_dir

    folder = save_local_dir(output, model, pretrained)
    click.echo(f"Wrote {folder}; use it with --model local-dir:{folder.resolve()}")


def _print_table(result: Any) -> None:
    click.echo(result.query)
    if result.error:
        click.echo("  (could not be read)")
        return
    width = max([len(m.pin_id) for m in result.matches] + [6])
    click.echo(f"  {'rank':>4}  {'pin id':<{width}}  {'score':>6}  name")
    for match in result.matches:
        click.echo(f"  {match.rank:>4}  {match.pin_id:<{width}}  {match.score:6.3f}  {match.name}")


def _describe_preprocess(preprocess: dict[str, Any]) -> str:
    size = preprocess.get("size")
    size_text = "x".join(map(str, size)) if isinstance(size, list) else str(size)
    return f"{size_text} px, {preprocess.get('resize_mode')} resize, {preprocess.get('interpolation')}"


def _requested_spec(model: str | None, pretrained: str | None) -> Any:
    """The default model comes with its default weights; a model named without a tag gets none."""
    from .encoder import DEFAULT_MODEL, DEFAULT_PRETRAINED, EncoderSpec

    return EncoderSpec(model or DEFAULT_MODEL, pretrained if pretrained is not None or model else DEFAULT_PRETRAINED)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@contextmanager
def _progress(total: int, what: str, quiet: bool) -> Iterator[Any]:
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent in logs and pipes.
    with tqdm(total=total, desc=what, unit="img", disable=True if quiet else None, file=sys.stderr,
              dynamic_ncols=True) as bar:
        yield bar.update


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn errors into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="pinid", standalone_mode=False)
    except PinidError as exc:
        click.echo(f"pinid: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("pinid: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


__all__ = ["cli", "main"]
