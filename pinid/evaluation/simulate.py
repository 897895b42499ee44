"""Simulated phone photos of a catalogue's own reference images, for self-calibration.

``pinid calibrate INDEX`` without labelled photos learns how this index's
evidence (CLIP, vote, geometry, colour) tells right from wrong on photos it
makes itself: each reference image becomes a flat enamel pin
(:func:`pinid.synth.reference.material_from_image`) that the benchmark's photo
simulator tilts, rotates, lights, blurs, compresses and half covers with a
finger (:func:`pinid.synth.scenes.query_photo`). A share of the photos plays a
pin that is not in the catalogue: its whole design is left out of the answer
(``exclude_pins``), so no rebuild is needed.

Photo ``i`` draws everything from its own generator ``default_rng([seed, i])``:
the same seed gives the same photos, and asking for more photos keeps the
first ones as they were.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import numpy as np

from ..errors import ImageError, InputError
from ..images import load_image, working_copy
from ..local.features import FeatureConfig, pin_mask
from ..synth.enamel import Material
from ..synth.reference import material_from_image
from ..synth.scenes import query_photo

if TYPE_CHECKING:
    from ..index import PinIndex

# Default photo count. Measured on a 2,000-pin CLIP index (ViT-B-32-256 on the CPU): 1.3 CPU-seconds
# per photo (simulation 0.25, identification with CLIP 1.05), so 300 photos take about 3-4 minutes on
# 2 free cores (two photos at a time) and 6.5 minutes where only one core is free; fewer photos make
# the fit and its held-out figures noisier (100 held out, about 25 of them of pins not in the catalogue).
SIMULATED_PHOTOS = 300
SELF_CALIBRATE_MIN_PINS = 50  # build-index self-calibrates catalogues of this many pins or more
UNKNOWN_SHARE = 0.25  # share of photos whose design plays "not in the catalogue"
NEIGHBOUR_CHANCE = 0.3  # as the benchmark: this share of photos has 1-2 other pins lying beside the pin
REFERENCE_SIDE = 1024  # reference images are reduced to this long side before they become a material
T = TypeVar("T")
_MATERIALS_KEPT = 8  # materials are ~9 MB each at 512 px: keep only the last few (small catalogues repeat)


@dataclass(frozen=True)
class PinImages:
    """One catalogue pin as the simulator sees it: id, design and its reference images' recorded paths."""

    pin_id: str
    design: str
    images: tuple[str, ...]


@dataclass(frozen=True)
class SimulatedPhoto:
    """Photo ``number``: JPEG bytes of ``pin_id`` seen through ``reference``.

    ``excluded`` lists the pins left out of the answer: empty for a photo of a
    catalogue pin, every colourway of its design for one "not in the catalogue".
    """

    number: int
    pin_id: str
    reference: str
    excluded: frozenset[str]
    data: bytes

    @property
    def known(self) -> bool:
        return not self.excluded


@dataclass(frozen=True)
class Unreadable:
    """Photo ``number`` could not be made: its reference image cannot be read (``where``, ``why``)."""

    number: int
    where: str
    why: str


def catalogue_pins(index: "PinIndex") -> list[PinImages]:
    """Every pin of ``index`` (a ``PinIndex``) with its design and reference images, by pin id."""
    table = index.recogniser.table
    images: dict[int, list[str]] = {}
    for image_id, pin_row in zip(table.image_ids.tolist(), table.image_pin_rows.tolist()):
        images.setdefault(int(pin_row), []).append(table.image_paths[int(image_id)])
    pins = [PinImages(pin.pin_id, pin.design, tuple(images.get(row, ()))) for row, pin in table.pins.items()]
    return sorted((pin for pin in pins if pin.images), key=lambda pin: pin.pin_id)


class PhotoSimulator:
    """Makes photo ``i`` of a catalogue from ``(seed, i)`` alone; materials of recent images are reused."""

    def __init__(self, pins: list[PinImages], seed: int, *, unknown_share: float = UNKNOWN_SHARE,
                 features: FeatureConfig = FeatureConfig()) -> None:
        if not pins:
            raise InputError("the index has no pins with reference images to simulate photos of")
        if not 0.0 <= unknown_share < 1.0:
            raise InputError(f"the share of pins not in the catalogue must be in [0, 1), not {unknown_share}")
        self.pins = pins
        self.seed = seed
        self.unknown_share = unknown_share
        self.features = features
        self._designs: dict[str, frozenset[str]] = {}
        for pin in pins:
            self._designs[pin.design] = self._designs.get(pin.design, frozenset()) | {pin.pin_id}
        self._materials: OrderedDict[tuple[str, int], Material] = OrderedDict()
        self._lock = threading.Lock()  # photos are made on worker threads

    def photo(self, number: int) -> SimulatedPhoto | Unreadable:
        """Photo ``number``: a random pin and one of its images, perhaps left out, perhaps with neighbours."""
        rng = np.random.default_rng([self.seed, number])
        pin = self.pins[int(rng.integers(len(self.pins)))]
        reference = pin.images[int(rng.integers(len(pin.images)))]
        excluded = self._designs[pin.design] if rng.random() < self.unknown_share else frozenset()
        others = [i for i, other in enumerate(self.pins) if other.design != pin.design]
        picks: list[int] = []
        if others and rng.random() < NEIGHBOUR_CHANCE:
            picks = [others[int(i)] for i in rng.choice(len(others), size=min(len(others), int(rng.integers(1, 3))),
                                                          replace=False)]
        neighbour_images = [self.pins[i].images[int(rng.integers(len(self.pins[i].images)))] for i in picks]
        try:
            material = self.material(reference, 512)
            neighbours = [self.material(path, 256) for path in neighbour_images]
        except ImageError as exc:
            return Unreadable(number, exc.path, exc.reason)
        data, _ = query_photo(material, rng, neighbours)
        return SimulatedPhoto(number, pin.pin_id, reference, excluded, data)

    def material(self, path: str, size: int) -> Material:
        """The pin of one reference image as a simulator material (cut out of its backdrop).

        Raises:
            ImageError: the image cannot be read, or is too small to be a pin (one pixel high, say).
        """
        key = (path, size)
        with self._lock:
            if key in self._materials:
                self._materials.move_to_end(key)
                return self._materials[key]
        image, _ = working_copy(load_image(path, min_side=REFERENCE_SIDE), REFERENCE_SIDE)
        try:
            material = material_from_image(np.asarray(image), pin_mask(image, config=self.features), size)
        except ValueError as exc:
            raise ImageError(path, f"cannot be made into a pin ({exc})") from None
        with self._lock:
            self._materials[key] = material
            while len(self._materials) > _MATERIALS_KEPT:
                self._materials.popitem(last=False)
        return material

    def photos(self, count: int, *, workers: int = 2) -> Iterator[SimulatedPhoto | Unreadable]:
        """Photos ``0 .. count-1`` in order, made ``workers`` at a time."""
        return in_order(self.photo, count, workers=workers)


def in_order(work: Callable[[int], T], count: int, *, workers: int = 2) -> Iterator[T]:
    """``work(0) .. work(count-1)``, run ``workers`` at a time on threads, yielded in order.

    Photo simulation and identification spend their time in OpenCV, NumPy,
    FAISS and torch, outside Python's lock, so threads use every core. Only a
    few results are made ahead of the consumer; an exception in ``work`` is
    raised at its place in the order, and the work not yet started is dropped.
    """
    if workers <= 1:
        for number in range(count):
            yield work(number)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[T]] = deque()
        submitted = 0
        try:
            for _ in range(count):
                while submitted < count and len(pending) < 2 * workers:
                    pending.append(pool.submit(work, submitted))
                    submitted += 1
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
