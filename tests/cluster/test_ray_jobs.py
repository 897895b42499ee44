"""Builds and dedup on a local Ray instance give what one machine gives; killed workers and interrupted
runs still end with the same result (``pinid.cluster``).

The instance is started by the tests (``ray.init(num_cpus=2)``, tests/cluster/conftest.py) and the
encoder is the tiny random-weights model: equality of vectors and answers is what is tested, not accuracy.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from pinid.catalogue import read_catalogue
from pinid.cluster import RayOptions, build_index_on_ray, dedup_on_ray
from pinid.cluster.jobs import fill_embeddings, hash_files
from pinid.cluster.work import entry_from_bytes, entry_to_bytes
from pinid.dedup import DedupOptions, dedup, read_listings
from pinid.dedup.local_pairs import PhotoHashOnly, dedup_local, open_feature_cache
from pinid.encoder import Encoder
from pinid.encoder.cache import FEATURE_CACHE_DIR, EmbeddingCache, EmbedOptions
from pinid.errors import ClusterError, EncoderMismatchError
from pinid.identify.recogniser import LocalConfig
from pinid.index import PinIndex
from pinid.index.build import BuildOptions
from pinid.local.cache import FeatureCache
from pinid.local.features import reference_entry
from pinid.images import load_image

from .faults import KillOnce, StopAfter

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "catalogue"

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _caches(folder: Path, encoder: Encoder | None) -> BuildOptions:
    cache = EmbeddingCache.open(folder, encoder.identity()) if encoder is not None else None
    return BuildOptions(cache=cache, feature_cache=FeatureCache.open(folder / FEATURE_CACHE_DIR,
                                                                    LocalConfig().features))


def _loader(model_dir: Path) -> Any:
    return functools.partial(Encoder.load, f"local-dir:{model_dir}", device="cpu", offline=True)


def _contents(index_dir: Path) -> dict[str, Any]:
    """Everything an index holds that must not depend on how it was built (not the manifest's timestamps)."""
    with sqlite3.connect(index_dir / "catalogue.sqlite") as connection:
        pins = connection.execute("SELECT * FROM pins ORDER BY pin_row").fetchall()
        images = connection.execute("SELECT * FROM images ORDER BY image_id").fetchall()
    arrays = {str(path.relative_to(index_dir)): np.load(path, allow_pickle=False)
              for path in sorted((index_dir / "local").rglob("*.npy"))}
    vectors = None
    if (index_dir / "vectors.faiss").exists():
        index = faiss.read_index(str(index_dir / "vectors.faiss"))
        vectors = np.stack([index.reconstruct(int(row[0])) for row in images])
    return {"pins": pins, "images": images, "arrays": arrays, "vectors": vectors}


def assert_same_index(first: Path, second: Path) -> None:
    a, b = _contents(first), _contents(second)
    assert a["pins"] == b["pins"] and a["images"] == b["images"]  # same ids, paths and checksums
    assert a["arrays"].keys() == b["arrays"].keys() and a["arrays"]
    for name in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][name], b["arrays"][name], err_msg=name)
    if a["vectors"] is None:
        assert b["vectors"] is None
    else:
        np.testing.assert_allclose(a["vectors"], b["vectors"], atol=1e-5)


def answers(index_dir: Path, photos: list[Path]) -> list[list[tuple[str, float]]]:
    index = PinIndex.load(index_dir)
    found = []
    for result in index.identify_many(photos, k=3):
        assert result.error is None, result.error
        found.append([(match.pin_id, round(match.probability or 0.0, 3)) for match in result.matches])
    return found


def _photos(bench: Path, count: int = 4) -> list[Path]:
    lines = (bench / "queries.csv").read_text().splitlines()[1:count + 1]
    return [bench / line.split(",")[1] for line in lines]


# --------------------------------------------------------------- equivalence
def test_ray_build_gives_the_local_index(tiny_bench: Path, tiny_encoder: Encoder, tmp_path: Path) -> None:
    """The small generated benchmark; the sample catalogue is compared in tests/cluster/test_ray_cli.py."""
    catalogue = read_catalogue(tiny_bench / "catalogue")
    PinIndex.build(catalogue, tmp_path / "local", tiny_encoder)
    report = build_index_on_ray(catalogue, tmp_path / "ray", tiny_encoder, _caches(tmp_path / "cache", tiny_encoder),
                                RayOptions(workers=2, batch_size=4), offline=True)
    assert report.images == sum(len(pin.images) for pin in catalogue.pins)
    assert_same_index(tmp_path / "local", tmp_path / "ray")
    photos = _photos(tiny_bench)
    assert answers(tmp_path / "local", photos) == answers(tmp_path / "ray", photos)


def _rows(report: Any) -> list[tuple[Any, ...]]:
    return [(row.listing_id, row.group_id, row.group_size, row.representative, row.reason, row.phash_distance,
             None if row.score is None else round(row.score, 4)) for row in report.rows]


def test_ray_dedup_gives_the_local_groups(tiny_bench: Path, tiny_model_dir: Path, tiny_encoder: Encoder,
                                          tmp_path: Path) -> None:
    listings = read_listings(tiny_bench / "listings.csv")
    options = DedupOptions(mode="pin")  # photo relations and same-pin ones
    local = dedup(listings, tiny_encoder, EmbeddingCache.open(tmp_path / "a", tiny_encoder.identity()), options)
    on_ray = dedup_on_ray(listings, tiny_encoder, EmbeddingCache.open(tmp_path / "b", tiny_encoder.identity()),
                          options, EmbedOptions(), RayOptions(workers=2, batch_size=4),
                          load_encoder=_loader(tiny_model_dir))
    assert (on_ray.encoded, on_ray.cached) == (local.encoded, local.cached) and local.cached == 0
    assert _rows(on_ray) == _rows(local)
    assert any(row.group_size > 1 for row in local.rows)  # the comparison covers real groups


def test_ray_dedup_with_no_model_gives_the_local_groups(tiny_bench: Path, tmp_path: Path) -> None:
    listings = read_listings(tiny_bench / "listings.csv")
    options = DedupOptions(mode="pin")
    with open_feature_cache(tmp_path / "a") as features:
        local = dedup_local(listings, EmbeddingCache.open(tmp_path / "a", PhotoHashOnly().identity()), features,
                            options)
    with open_feature_cache(tmp_path / "b") as features:
        on_ray = dedup_on_ray(listings, PhotoHashOnly(), EmbeddingCache.open(tmp_path / "b",
                                                                            PhotoHashOnly().identity()),
                              options, EmbedOptions(), RayOptions(workers=2), feature_cache=features)
    assert (on_ray.encoded, on_ray.cached) == (local.encoded, local.cached)
    assert _rows(on_ray) == _rows(local)
    assert any(row.group_size > 1 for row in local.rows)


# ------------------------------------------------------------------- failure
def test_a_killed_worker_is_replaced_and_the_build_is_the_same(make_catalogue: Any, tiny_model_dir: Path,
                                                               tiny_encoder: Encoder, tmp_path: Path) -> None:
    """One actor's process is killed mid-build; one image of the catalogue is not an image at all."""
    root = make_catalogue(pins=9)
    (root / "pin-001" / "img0.png").write_bytes(b"not an image")
    catalogue = read_catalogue(root)
    marker = tmp_path / "killed"
    report = build_index_on_ray(catalogue, tmp_path / "ray", tiny_encoder, _caches(tmp_path / "cache", tiny_encoder),
                                RayOptions(workers=2, batch_size=2),
                                load_encoder=KillOnce(_loader(tiny_model_dir), marker))
    assert marker.exists(), "no actor was killed: the test did not test anything"
    # the unreadable image is reported by the build as without Ray, and its pin is left out
    assert report.pins == 8 and [where for where, _ in report.skipped] == [str(root / "pin-001" / "img0.png"),
                                                                           "pin-001"]
    PinIndex.build(catalogue, tmp_path / "local", tiny_encoder)
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_an_interrupted_run_resumes_from_the_shards_written(make_catalogue: Any, tiny_model_dir: Path,
                                                           tiny_encoder: Encoder, tmp_path: Path) -> None:
    catalogue = read_catalogue(make_catalogue(pins=8))
    paths = [image for pin in catalogue.pins for image in pin.images]
    options = _caches(tmp_path / "cache", tiny_encoder)
    ray_options = RayOptions(workers=1, batch_size=2)
    # a worker whose every batch fails stops the job with one error that says how to go on
    with pytest.raises(ClusterError, match="run the same command again to resume"):
        build_index_on_ray(catalogue, tmp_path / "ray", tiny_encoder, options, ray_options,
                           load_encoder=StopAfter(_loader(tiny_model_dir), tmp_path / "failed", batches=0))

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "encoding (ray)" and done > 0:
            raise KeyboardInterrupt  # Ctrl-C once the first results are in

    with pytest.raises(KeyboardInterrupt):
        build_index_on_ray(catalogue, tmp_path / "ray", tiny_encoder, options, ray_options, on_progress=interrupt)
    kept = len(EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity()))
    assert 0 < kept < len(paths)  # what arrived was written before the run stopped
    assert not (tmp_path / "ray").exists()
    counter = tmp_path / "resumed"  # one line per batch, with its size
    build_index_on_ray(catalogue, tmp_path / "ray", tiny_encoder, options, RayOptions(workers=2, batch_size=2),
                       load_encoder=StopAfter(_loader(tiny_model_dir), counter, batches=10**6))
    assert sum(map(int, counter.read_text().split())) == len(paths) - kept  # only the rest was encoded
    PinIndex.build(catalogue, tmp_path / "local", tiny_encoder)
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_a_worker_with_other_weights_stops_the_job(make_catalogue: Any, other_model_dir: Path,
                                                   tiny_encoder: Encoder, tmp_path: Path) -> None:
    paths = sorted(make_catalogue(pins=3).rglob("*.png"))
    cache = EmbeddingCache.open(tmp_path / "cache", tiny_encoder.identity())
    with pytest.raises(EncoderMismatchError, match="give every node the same weights"):
        fill_embeddings(paths, hash_files(paths), _loader(other_model_dir), tiny_encoder.identity(),
                        tiny_encoder.image_size, cache, RayOptions(workers=1))
    assert len(cache) == 0


def test_entries_cross_the_object_store_unchanged(tiny_bench: Path) -> None:
    path = sorted((tiny_bench / "catalogue").rglob("*.png"))[0]
    entry = reference_entry(load_image(path))
    back = entry_from_bytes(entry_to_bytes(entry))
    np.testing.assert_array_equal(back.features.keypoints, entry.features.keypoints)
    np.testing.assert_array_equal(back.features.descriptors, entry.features.descriptors)
    np.testing.assert_array_equal(back.colour, entry.colour)
    assert (back.pin_box, back.features.width, back.features.height) == \
        (entry.pin_box, entry.features.width, entry.features.height)
