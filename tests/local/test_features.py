"""FeatureConfig reaches feature extraction (pinid.local.features)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from pinid.local.features import FeatureConfig, pin_mask, query_features, reference_entry, reference_features
from tests.support import PERSPECTIVE, background, pin, place


def test_feature_config_is_obeyed() -> None:
    shot = pin(5)
    assert len(reference_entry(shot, config=FeatureConfig(max_reference_features=100)).features) <= 100
    one_view = FeatureConfig(reference_view_long_sides_px=(256,), tilt_directions_deg=(0,),
                             tilted_view_long_sides_px=(192,))
    assert len(reference_features(shot, config=one_view)) < len(reference_features(shot))
    photo = Image.fromarray(place(background(), shot, PERSPECTIVE))
    assert len(query_features(photo, config=FeatureConfig(max_query_features=30))) == 30
    uncapped = FeatureConfig(max_query_features=100_000)
    small = query_features(photo, config=replace(uncapped, query_long_side_px=256))
    assert (small.width, small.height) == photo.size  # coordinates stay in the photo's pixels
    assert 0 < len(small) < len(query_features(photo, config=uncapped))
    everything = len(query_features(photo, config=uncapped))
    assert len(query_features(photo)) == min(FeatureConfig().max_query_features, everything)
    # nothing on the light backdrop differs by more than 255 grey levels
    assert not pin_mask(shot, config=FeatureConfig(foreground_difference_above=255)).any()
    assert np.array_equal(pin_mask(shot), pin_mask(shot, config=FeatureConfig()))


def test_reference_entry_has_the_features_of_reference_features() -> None:
    # reference_entry shares its RGB pixels and pin mask with the dark-backdrop pass: the same features as
    # computing everything afresh, also for a shot with no visible pin (whose colour mask is the whole image)
    texture = np.random.default_rng(0).integers(-25, 26, size=(40, 50, 1))  # faint: within 40 of the backdrop
    faint = np.clip(236 + np.kron(texture, np.ones((4, 4, 3))), 0, 255).astype(np.uint8)
    blank = Image.fromarray(faint)  # nothing differs enough from the backdrop to be a pin
    for shot in (pin(7), blank):
        entry, direct = reference_entry(shot).features, reference_features(shot)
        assert np.array_equal(entry.keypoints, direct.keypoints)
        assert np.array_equal(entry.descriptors, direct.descriptors)


def test_fast_config_has_fewer_views_and_round_trips() -> None:
    fast = FeatureConfig.fast()
    assert FeatureConfig.from_dict(fast.to_dict()) == fast  # an index built with it records and reloads it
    default = FeatureConfig()
    assert len(fast.tilt_directions_deg) < len(default.tilt_directions_deg)
    assert max(fast.tilted_view_long_sides_px) < max(default.tilted_view_long_sides_px)
    assert len(reference_entry(pin(5), config=fast).features) > 100


def test_mirror_bins_are_the_descriptors_of_the_mirrored_image() -> None:
    # OpenCV's own descriptors of a mirrored image, at the mirrored keypoints, against each of our candidate
    # permutations: MIRROR_BINS must be the one that reproduces them (the rest differ by ~100 %)
    import cv2

    from pinid.local.features import MIRROR_BINS

    grey = np.asarray(pin(5).convert("L"))
    sift = cv2.SIFT_create(contrastThreshold=0.02)
    keypoints, descriptors = sift.detectAndCompute(grey, None)
    width = grey.shape[1]
    mirrored = [cv2.KeyPoint(width - 1 - k.pt[0], k.pt[1], k.size, (180.0 - k.angle) % 360.0, k.response, k.octave)
                for k in keypoints]
    _, expected = sift.compute(np.ascontiguousarray(grey[:, ::-1]), mirrored)
    grid = np.arange(128).reshape(4, 4, 8)
    negated = (-np.arange(8)) % 8
    others = [np.arange(128), grid[:, ::-1][:, :, negated].reshape(-1), grid[::-1].reshape(-1)]

    def error(bins: np.ndarray) -> float:
        return float(np.abs(expected - descriptors[:, bins]).mean() / np.abs(expected).mean())

    assert error(MIRROR_BINS) < 0.2
    assert all(error(bins) > 0.5 for bins in others)


def test_inverted_bins_are_the_descriptors_of_the_inverted_image() -> None:
    # OpenCV's own descriptors of the image with light and dark swapped, at the same keypoints turned half round:
    # INVERTED_BINS must reproduce them, and the other candidate permutations must not
    import cv2

    from pinid.local.features import INVERTED_BINS, MIRROR_BINS

    grey = np.asarray(pin(5).convert("L"))
    sift = cv2.SIFT_create(contrastThreshold=0.02)
    keypoints, descriptors = sift.detectAndCompute(grey, None)
    turned = [cv2.KeyPoint(k.pt[0], k.pt[1], k.size, (k.angle + 180.0) % 360.0, k.response, k.octave)
              for k in keypoints]
    _, expected = sift.compute(np.ascontiguousarray(255 - grey), turned)
    grid = np.arange(128).reshape(4, 4, 8)
    others = [np.arange(128), MIRROR_BINS, grid[::-1].reshape(-1), grid[:, :, (np.arange(8) + 4) % 8].reshape(-1)]

    def error(bins: np.ndarray) -> float:
        return float(np.abs(expected - descriptors[:, bins]).mean() / np.abs(expected).mean())

    assert error(INVERTED_BINS) < 0.05
    assert all(error(bins) > 0.5 for bins in others)


def test_mirrored_features_describe_the_mirrored_photo() -> None:
    from PIL import ImageOps

    from pinid.local.features import query_feature_pair

    photo = Image.fromarray(place(background(), pin(5), PERSPECTIVE))
    upright, mirror = query_feature_pair(photo)
    assert mirror is not None and len(mirror) == len(upright)
    assert np.allclose(mirror.keypoints[:, 0], photo.width - 1 - upright.keypoints[:, 0], atol=1.0)
    # each mirror feature finds its counterpart among the features SIFT finds in the mirrored photo
    seen = query_features_of(ImageOps.mirror(photo))
    distances = np.linalg.norm(mirror.descriptors[:200, None].astype(np.float32)
                               - seen.descriptors[None].astype(np.float32), axis=2)
    nearest = distances.argmin(axis=1)
    offset = np.linalg.norm(mirror.keypoints[:200, :2] - seen.keypoints[nearest, :2], axis=1)
    assert np.mean(offset < 2.0) > 0.8
    assert query_feature_pair(photo, mirrored=False)[1] is None


def test_computed_mirror_descriptors_are_closer_to_the_mirrored_photos_than_permuted_ones() -> None:
    from PIL import ImageOps

    from pinid.local.features import query_feature_pair

    photo = Image.fromarray(place(background(), pin(5), PERSPECTIVE))
    seen = query_features_of(ImageOps.mirror(photo))

    def gap(config: FeatureConfig) -> float:
        """Median code distance from each mirror feature to SIFT's feature of the mirrored photo at its place."""
        _, mirror = query_feature_pair(photo, config=config)
        assert mirror is not None
        offsets = np.linalg.norm(mirror.keypoints[:300, None, :2] - seen.keypoints[None, :, :2], axis=2)
        nearest = offsets.argmin(axis=1)
        same = (offsets.min(axis=1) < 0.5) & (np.abs(mirror.keypoints[:300, 2] - seen.keypoints[nearest, 2]) < 0.1)
        assert same.sum() > 100
        codes = mirror.descriptors[:300][same].astype(np.float32)
        return float(np.median(np.linalg.norm(codes - seen.descriptors[nearest[same]].astype(np.float32), axis=1)))

    computed, permuted = gap(FeatureConfig(computed_mirror_descriptors=1)), gap(FeatureConfig())
    assert computed < 0.75 * permuted, (computed, permuted)


def query_features_of(image: Image.Image):
    return query_features(image)


def test_kept_keypoints_are_spread_over_the_photo() -> None:
    from pinid.local.features import spread_strongest

    # a busy corner with strong keypoints and a quiet rest with weak ones
    rng = np.random.default_rng(0)
    busy = np.column_stack([rng.uniform(0, 25, (400, 2)), np.full((400, 2), 4.0)])
    quiet = np.column_stack([rng.uniform(25, 100, (100, 2)), np.full((100, 2), 4.0)])
    points = np.vstack([busy, quiet]).astype(np.float32)
    responses = np.concatenate([rng.uniform(0.5, 1.0, 400), rng.uniform(0.0, 0.1, 100)]).astype(np.float32)
    plain = spread_strongest(points, responses, 200, (100, 100), 1)
    assert (plain < 400).all()  # the plain cut keeps only the busy corner
    spread = spread_strongest(points, responses, 200, (100, 100), 4)
    assert len(set(spread.tolist())) == 200 and (spread >= 400).sum() == 100  # every quiet keypoint kept
    assert responses[spread[spread < 400]].min() >= np.sort(responses[:400])[-100]  # the busy corner's strongest
    assert spread_strongest(points, responses, 1000, (100, 100), 4).tolist() == \
        np.argsort(-responses, kind="stable").tolist()  # under the limit: all, strongest first
