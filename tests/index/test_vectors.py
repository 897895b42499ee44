"""The CLIP vector index chosen by size (pinid/index/vectors.py): choice, spec, IVF add/remove, search."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pinid.errors import IndexFormatError, InputError
from pinid.index.search import ExactSearcher
from pinid.index.vectors import (AUTO_IVF_KIND, EXACT_LIMIT, IVF_PROBES, MAX_LISTS, VECTOR_INDEX_TYPES,
                                 ApproximateSearcher, VectorIndexSpec, add_vectors, apply_search_parameters,
                                 choose_vector_index, make_searcher, new_vector_index, spec_of)

DIM = 32


def clustered(count: int, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight clusters: what CLIP embeddings of similar pins look like, at toy size."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    members = centres[rng.integers(0, clusters, count)] + 0.3 * rng.standard_normal((count, DIM)).astype(np.float32)
    return (members / np.linalg.norm(members, axis=1, keepdims=True)).astype(np.float32)


def all_ids(index) -> set[int]:
    """Every id stored in an IVF index (search everything with every list probed)."""
    ivf_spec = spec_of(index)
    apply_search_parameters(index, VectorIndexSpec(ivf_spec.kind, ivf_spec.lists, ivf_spec.lists))
    _, ids = index.search(np.ones((1, DIM), dtype=np.float32), max(index.ntotal, 1))
    return {int(i) for i in ids[0] if i >= 0}


def test_auto_is_exact_up_to_the_limit_and_ivf_above() -> None:
    assert choose_vector_index(0) == VectorIndexSpec("flat", 0, 0)
    assert choose_vector_index(50_000) == VectorIndexSpec("flat")  # exact while its p50 stays under 5 ms
    assert choose_vector_index(EXACT_LIMIT).kind == "flat"
    above = choose_vector_index(EXACT_LIMIT + 1)
    assert above.kind == AUTO_IVF_KIND and above.lists == round(4 * math.sqrt(EXACT_LIMIT + 1))
    assert above.probes == IVF_PROBES
    assert choose_vector_index(1_000_000) == VectorIndexSpec(AUTO_IVF_KIND, 4000, IVF_PROBES)
    assert choose_vector_index(10**9).lists == MAX_LISTS


def test_a_forced_kind_is_used_whatever_the_size() -> None:
    assert choose_vector_index(10**7, "flat") == VectorIndexSpec("flat")
    fp16 = choose_vector_index(50, "ivf-fp16")
    assert fp16 == VectorIndexSpec("ivf-fp16", 1, 1)  # 50 vectors train one list; probes never exceed lists
    sq8 = choose_vector_index(10_000, "ivf-sq8")
    assert sq8.kind == "ivf-sq8" and sq8.lists == 10_000 // 39 and sq8.probes == IVF_PROBES


@pytest.mark.parametrize("bad", ["hnsw", "", "FLAT", "ivf"])
def test_an_unknown_kind_is_an_input_error_listing_the_choices(bad: str) -> None:
    with pytest.raises(InputError, match="auto, flat, ivf-sq8, ivf-fp16"):
        choose_vector_index(1000, bad)
    assert VECTOR_INDEX_TYPES == ("auto", "flat", "ivf-sq8", "ivf-fp16")


@pytest.mark.parametrize("spec", [VectorIndexSpec("flat"), VectorIndexSpec("ivf-sq8", 4000, 32),
                                  VectorIndexSpec("ivf-fp16", 1, 1)])
def test_the_spec_round_trips_through_the_manifest(spec: VectorIndexSpec) -> None:
    assert VectorIndexSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("garbage", [None, [], "flat", {"kind": "hnsw", "lists": 1, "probes": 1},
                                     {"lists": 4, "probes": 1}, {"kind": "flat", "lists": 3, "probes": 0},
                                     {"kind": "ivf-sq8", "lists": 0, "probes": 1},
                                     {"kind": "ivf-sq8", "lists": 4, "probes": 0},
                                     {"kind": "ivf-sq8", "lists": "4", "probes": 1},
                                     {"kind": "ivf-sq8", "lists": True, "probes": 1},
                                     {"kind": "ivf-sq8", "lists": 4.0, "probes": 1},
                                     {"kind": "ivf-sq8", "lists": -4, "probes": 1},
                                     {"kind": "flat", "lists": 0, "probes": 0, "nprobe": 3}])
def test_a_garbled_spec_is_an_index_format_error(garbage: object) -> None:
    with pytest.raises(IndexFormatError, match="vector index"):
        VectorIndexSpec.from_dict(garbage)


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-fp16"])
def test_ivf_adds_gappy_ids_and_removes_exactly_the_ones_asked(kind: str) -> None:
    vectors = clustered(2000)
    ids = np.arange(2000, dtype=np.int64) * 7 + 3  # gaps, as after removals
    spec = VectorIndexSpec(kind, 16, 4)
    index = new_vector_index(spec, DIM, vectors)
    index.add_with_ids(vectors, ids)
    assert index.ntotal == 2000 and all_ids(index) == set(ids.tolist())
    gone = ids[::5]
    assert index.remove_ids(gone) == len(gone)
    assert index.ntotal == 2000 - len(gone) and all_ids(index) == set(ids.tolist()) - set(gone.tolist())
    assert index.remove_ids(np.array([4], dtype=np.int64)) == 0  # never stored: nothing else goes


def test_the_probes_come_back_after_a_write_and_read(tmp_path: Path) -> None:
    import faiss

    vectors = clustered(1000)
    spec = VectorIndexSpec("ivf-sq8", 8, 3)
    index = new_vector_index(spec, DIM, vectors)
    index.add_with_ids(vectors, np.arange(1000, dtype=np.int64))
    faiss.write_index(index, str(tmp_path / "vectors.faiss"))
    read = faiss.read_index(str(tmp_path / "vectors.faiss"))
    read.nprobe = 1  # as if the file had not kept it
    apply_search_parameters(read, spec)
    assert spec_of(read) == spec and read.nprobe == 3
    assert apply_search_parameters(read, VectorIndexSpec("ivf-sq8", 8, 100)).nprobe == 8  # capped at the lists
    with pytest.raises(IndexFormatError, match="manifest says ivf-fp16"):
        apply_search_parameters(read, VectorIndexSpec("ivf-fp16", 8, 3))
    with pytest.raises(IndexFormatError, match="manifest says flat"):
        apply_search_parameters(read, VectorIndexSpec("flat"))


def test_approximate_search_finds_the_same_top_hit_as_exact_for_near_duplicates() -> None:
    vectors = clustered(2000)
    ids = np.arange(2000, dtype=np.int64) * 3 + 1
    spec = VectorIndexSpec("ivf-sq8", 16, 4)
    index = new_vector_index(spec, DIM, vectors)
    index.add_with_ids(vectors, ids)
    searcher = make_searcher(index, spec)
    assert isinstance(searcher, ApproximateSearcher) and (searcher.dim, searcher.total) == (DIM, 2000)
    rng = np.random.default_rng(1)
    queries = vectors[:100] + 0.01 * rng.standard_normal((100, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, found = searcher.search(queries, 5)
    assert found.shape == scores.shape == (100, 5) and found.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(found[:, 0], ids[np.argmax(queries @ vectors.T, axis=1)])
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ vectors.T, axis=1), atol=0.02)


def test_approximate_search_pads_with_minus_one_when_asked_for_more_than_it_holds() -> None:
    vectors = clustered(200)
    spec = VectorIndexSpec("ivf-fp16", 2, 2)
    index = new_vector_index(spec, DIM, vectors)
    index.add_with_ids(vectors[:6], np.array([10, 20, 30, 40, 50, 60], dtype=np.int64))
    scores, found = make_searcher(index, spec).search(vectors[:2], 9)
    assert found.shape == (2, 9) and (found[:, 6:] == -1).all() and np.isneginf(scores[:, 6:]).all()
    assert sorted(found[0, :6].tolist()) == [10, 20, 30, 40, 50, 60] and found[0, 0] == 10


def test_flat_gets_the_exact_searcher_and_an_ivf_file_is_not_taken_for_flat() -> None:
    vectors = clustered(300)
    flat = new_vector_index(VectorIndexSpec("flat"), DIM, None)
    flat.add_with_ids(vectors, np.arange(300, dtype=np.int64) + 5)
    searcher = make_searcher(flat, VectorIndexSpec("flat"))
    assert isinstance(searcher, ExactSearcher)
    assert searcher.search(vectors[:1], 1)[1][0, 0] == 5
    with pytest.raises(IndexFormatError, match="manifest says ivf-sq8"):
        make_searcher(flat, VectorIndexSpec("ivf-sq8", 4, 2))


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-fp16"])
@pytest.mark.parametrize("training, lists", [(200, 5), (40, 1), (10, 1), (1, 1), (0, 1)])
def test_too_few_training_points_fall_back_to_fewer_lists(kind: str, training: int, lists: int,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    vectors = clustered(300)
    index = new_vector_index(VectorIndexSpec(kind, 64, 8), DIM, vectors[:training] if training else None)
    assert spec_of(index) == VectorIndexSpec(kind, lists, min(8, lists))
    index.add_with_ids(vectors, np.arange(300, dtype=np.int64))
    _, found = ApproximateSearcher(index).search(vectors[:20], 1)
    assert (found[:, 0] == np.arange(20)).mean() >= 0.9  # still finds each vector itself
    assert capfd.readouterr().err == ""  # and FAISS printed no warning


def test_training_is_deterministic() -> None:
    import faiss

    vectors = clustered(3000)
    spec = VectorIndexSpec("ivf-sq8", 32, 4)
    first, second = new_vector_index(spec, DIM, vectors), new_vector_index(spec, DIM, vectors)
    centroids = [faiss.rev_swig_ptr(faiss.downcast_index(i.quantizer).get_xb(), 32 * DIM).copy()
                 for i in (first, second)]
    np.testing.assert_array_equal(*centroids)
    np.testing.assert_array_equal(faiss.vector_to_array(first.sq.trained), faiss.vector_to_array(second.sq.trained))


@pytest.mark.parametrize("kind", ["ivf-sq8", "ivf-fp16"])
def test_add_vectors_fills_the_same_lists_as_faiss_add_with_ids(kind: str) -> None:
    import faiss

    vectors = clustered(3000)
    ids = np.arange(3000, dtype=np.int64) * 2
    spec = VectorIndexSpec(kind, 16, 4)
    by_faiss, by_numpy = new_vector_index(spec, DIM, vectors), new_vector_index(spec, DIM, vectors)
    by_faiss.add_with_ids(vectors, ids)
    add_vectors(by_numpy, vectors, ids)

    def lists(index) -> list[list[int]]:
        return [faiss.rev_swig_ptr(index.invlists.get_ids(i), index.invlists.list_size(i)).tolist()
                for i in range(index.nlist)]

    assert lists(by_numpy) == lists(by_faiss) and by_numpy.ntotal == 3000
    np.testing.assert_array_equal(make_searcher(by_numpy, spec).search(vectors[:50], 5)[1],
                                  make_searcher(by_faiss, spec).search(vectors[:50], 5)[1])
    with pytest.raises(InputError, match="3000 vectors but 2 ids"):
        add_vectors(by_numpy, vectors, ids[:2])
