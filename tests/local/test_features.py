"""FeatureConfig reaches feature extraction (pinid.local.features)."""

from __future__ import annotations

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
    small = query_features(photo, config=FeatureConfig(query_long_side_px=256))
    assert (small.width, small.height) == photo.size  # coordinates stay in the photo's pixels
    assert 0 < len(small) < len(query_features(photo))
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
