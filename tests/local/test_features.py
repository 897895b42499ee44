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
