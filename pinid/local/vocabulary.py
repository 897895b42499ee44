"""The vote's vocabulary as one FAISS shard per store segment, so that a change writes only its own shards.

Each segment folder of the store holds ``vocabulary.faiss``: its live
descriptors (those the vote uses) under their global rows. The shards are
searched together (``faiss.IndexShards``: each shard's k nearest, merged), which
gives exactly the neighbours one index over all of them would give when the
shards are exact, and the same probing when they are inverted files sharing
one trained coarse quantiser. Adding images writes one new shard; removing
images writes nothing here: the rows of images no longer in the store are
left out of every search by an id selector (``exclude``), so the neighbours
found are exactly those of a vocabulary without them.

A catalogue whose vocabulary outgrows exact search (``VoteConfig.
exact_search_max_descriptors``) is retrained once as inverted files; every
later shard is a copy of that trained, empty template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import IndexFormatError
from .features import DESCRIPTOR_DIMS
from .vote import VoteConfig, add_descriptors, train_vocabulary, vote_positions

SHARD_FILE = "vocabulary.faiss"


def is_inverted(index: Any) -> bool:
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def empty_template(index: Any) -> Any:
    """An empty copy of a trained inverted-file shard: new shards share its coarse quantiser and codes."""
    import faiss

    template = faiss.clone_index(index)
    template.reset()
    return template


def voting_rows(row_images: np.ndarray, config: VoteConfig, catalogue_images: int) -> np.ndarray:
    """Positions of the rows (of images stored contiguously, ``row_images`` naming each row's image) that go
    into the vocabulary: all of them within the memory budget, an even spread of each image's beyond it."""
    row_images = np.asarray(row_images, dtype=np.int64).reshape(-1)
    return vote_positions(np.empty((len(row_images), 0)), row_images, config, catalogue_images)


def train_template(descriptors: np.ndarray, config: VoteConfig, count: int | None = None) -> Any | None:
    """An empty vocabulary trained on ``descriptors`` (those that will vote, or a sample of them) for ``count``
    of them in all: an inverted file when exact search would be too slow for that many, else ``None``."""
    return train_vocabulary(descriptors, config=config, count=count)


def new_shard(descriptors: np.ndarray, rows: np.ndarray, template: Any | None) -> Any:
    """A shard of these descriptors under their global rows: exact, or a copy of ``template`` (inverted)."""
    if template is None:
        import faiss

        shard = faiss.IndexIDMap2(faiss.IndexFlatL2(DESCRIPTOR_DIMS))
    else:
        shard = empty_template(template)
    add_descriptors(shard, descriptors, rows)
    return shard


def write_shard(shard: Any, folder: Path) -> None:
    import faiss

    faiss.write_index(shard, str(folder / SHARD_FILE))


def read_shard(folder: Path, config: VoteConfig = VoteConfig()) -> Any:
    import faiss

    path = folder / SHARD_FILE
    try:
        shard = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise IndexFormatError(f"{path} is not a readable FAISS index ({str(exc).strip().splitlines()[-1]}); "
                               "rebuild the index") from None
    if shard.d != DESCRIPTOR_DIMS:
        raise IndexFormatError(f"{path} holds {shard.d}-dimensional descriptors, not {DESCRIPTOR_DIMS}; "
                               "rebuild the index")
    if is_inverted(shard):
        faiss.extract_index_ivf(shard).nprobe = config.inverted_lists_probed
    return shard


class Vocabulary:
    """The shards searched as one index (what ``vote`` searches): ``ntotal``, ``search``, ``d``."""

    def __init__(self, shards: Sequence[Any], probes: int = VoteConfig().inverted_lists_probed) -> None:
        import faiss

        self.shards = list(shards)
        self.d = DESCRIPTOR_DIMS
        self.ntotal = sum(int(shard.ntotal) for shard in self.shards)
        self._probes = int(probes)
        self._selector: Any = None
        self.excluded = 0  # rows of removed images left out of every search
        self._joined: Any = None
        if len(self.shards) == 1:
            self._joined = self.shards[0]
        elif self.shards:
            joined = faiss.IndexShards(DESCRIPTOR_DIMS, False, False)  # not threaded; keep each shard's ids
            for shard in self.shards:
                joined.add_shard(shard)
            self._joined = joined

    @property
    def probes(self) -> int:
        """Inverted lists scanned per lookup (what ``VoteConfig.inverted_lists_probed`` set at load)."""
        return self._probes

    @probes.setter
    def probes(self, count: int) -> None:
        self._probes = int(count)

    def exclude(self, rows: np.ndarray) -> None:
        """Leave these global rows (of removed images) out of every search from now on."""
        import faiss

        rows = np.ascontiguousarray(rows, dtype=np.int64)
        self._selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(rows)) if len(rows) else None
        self.excluded = len(rows)

    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._joined is None or self.ntotal == 0:
            return (np.full((len(descriptors), k), np.inf, np.float32), np.full((len(descriptors), k), -1, np.int64))
        import faiss

        # parameters of this search alone: an ID map swaps the selector in the parameters it is given while it
        # searches, so searches sharing one object (the mirror image's vote on a worker thread, a server's
        # workers) crash once images were removed
        selector = self._selector  # held here for the search, should ``exclude`` replace it meanwhile
        parameters = faiss.SearchParametersIVF()
        parameters.nprobe = self._probes
        parameters.sel = selector
        return self._joined.search(descriptors, k, params=parameters)

    def template(self) -> Any | None:
        """An empty trained inverted file like the shards, or ``None`` while they are exact."""
        for shard in self.shards:
            if is_inverted(shard):
                return empty_template(shard)
        return None


def read_vocabulary(local: Path, segment_names: Sequence[str], expected: int | None,
                    config: VoteConfig = VoteConfig()) -> Vocabulary:
    """The shards of these segments, checked to hold ``expected`` descriptors in all (unless ``None``)."""
    vocabulary = Vocabulary([read_shard(local / name, config) for name in segment_names],
                            config.inverted_lists_probed)
    if expected is not None and vocabulary.ntotal != expected:
        raise IndexFormatError(f"the vocabulary holds {vocabulary.ntotal} descriptors, the manifest {expected}; "
                               "rebuild the index")
    return vocabulary


__all__ = ["SHARD_FILE", "Vocabulary", "empty_template", "is_inverted", "new_shard", "read_shard",
           "read_vocabulary", "train_template", "voting_rows", "write_shard"]
