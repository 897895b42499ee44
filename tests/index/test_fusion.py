"""Evidence fusion end to end: a CLIP index whose calibration has learned that CLIP is informative.

Blurred copies of catalogue images retrieve their own pin by CLIP (even with the
test model's random weights), while verification is made so strict that nothing
aligns: the answer can only come from CLIP's evidence, as for the benchmark's
photos that never align.
"""

from __future__ import annotations


import pytest
from PIL import Image, ImageFilter

from pinid.catalogue import read_catalogue
from pinid.encoder.clip import Encoder
from pinid.identify.confidence import LabelledPhoto, fit_calibration
from pinid.identify.recogniser import LocalConfig
from pinid.index import PinIndex
from pinid.local.verify import VerifyConfig
from tests.support import draw_pin_image

PINS = 16


def _blurred(seed: int) -> Image.Image:
    return draw_pin_image(seed).filter(ImageFilter.GaussianBlur(2))


@pytest.fixture(scope="module")
def strict_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Encoder) -> PinIndex:
    root = tmp_path_factory.mktemp("fusion")
    for p in range(PINS):
        folder = root / "catalogue" / f"pin-{p:03d}"
        folder.mkdir(parents=True)
        draw_pin_image(p * 100).save(folder / "front.png")
    return PinIndex.build(read_catalogue(root / "catalogue"), root / "index", tiny_encoder,
                          config=LocalConfig(verify=VerifyConfig(min_inliers=10_000, similarity_fallback=0)))


def _photos(pins: range, strangers: range) -> list[tuple[Image.Image, str | None]]:
    return ([(_blurred(p * 100), f"pin-{p:03d}") for p in pins]
            + [(_blurred(90_000 + s), None) for s in strangers])


def test_clip_answers_where_nothing_aligns_once_the_calibration_has_learned_it(strict_index: PinIndex) -> None:
    fitting, checking = _photos(range(0, PINS, 2), range(0, 8)), _photos(range(1, PINS, 2), range(8, 14))
    before = [strict_index.identify(photo) for photo, pin_id in checking if pin_id]
    assert all(answer.unknown for answer in before)  # the shipped calibration gives CLIP no weight

    samples = []
    for photo, pin_id in fitting:
        ranked, _ = strict_index.verified_candidates(photo)
        assert not any(c.aligned for c in ranked)
        samples.append(LabelledPhoto(ranked, [strict_index.pin_of(c) == pin_id for c in ranked]))
    strict_index.replace_calibration(fit_calibration(samples, fitted_on="blurred copies"))
    assert strict_index.calibration.weights()["clip_cosine"] > 0

    verified = [(strict_index.identify(photo), pin_id) for photo, pin_id in checking]
    by_clip = [(strict_index.identify(photo, verify=False), pin_id) for photo, pin_id in checking]
    known = [(answer, pin_id) for answer, pin_id in verified if pin_id]
    assert all(answer.matches[0].pin_id == pin_id and not answer.unknown for answer, pin_id in known)
    assert all(answer.unknown for answer, pin_id in verified if pin_id is None)
    recall = sum(answer.matches[0].pin_id == pin_id for answer, pin_id in known) / len(known)
    clip_recall = sum(answer.matches[0].pin_id == pin_id for answer, pin_id in by_clip if pin_id) / len(known)
    assert recall >= clip_recall
    # the table shows the evidence: CLIP's cosine, and no alignment
    top = known[0][0].matches[0]
    assert top.similarity is not None and top.similarity > 0.99 and top.inliers == 0 and top.colour_distance is None
