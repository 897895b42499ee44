"""The JSON form of the local configs (pinid.local.config): what an index's manifest keeps."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pinid.errors import IndexFormatError
from pinid.local.features import FeatureConfig
from pinid.local.verify import VerifyConfig
from pinid.local.vote import VoteConfig

CONFIGS = (FeatureConfig, VoteConfig, VerifyConfig)


@pytest.mark.parametrize("kind", CONFIGS)
def test_each_setting_has_a_default_of_its_declared_type(kind: type) -> None:
    # from_dict types values by their default: a float setting with an int default would refuse 0.5
    for field in dataclasses.fields(kind):
        declared = field.type if isinstance(field.type, str) else field.type.__name__
        default = field.default
        if isinstance(default, tuple):
            assert declared == f"tuple[{type(default[0]).__name__}, ...]", field.name
            assert all(type(item) is type(default[0]) for item in default), field.name
        else:
            assert declared == type(default).__name__, field.name


@pytest.mark.parametrize("kind", CONFIGS)
def test_config_survives_json_and_is_frozen(kind: type) -> None:
    default = kind()
    assert kind.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    assert kind.from_dict({}) == default  # an older manifest: every setting takes its default
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(default, dataclasses.fields(kind)[0].name, 1)


def test_non_default_values_round_trip() -> None:
    features = FeatureConfig(max_reference_features=300, tilt_directions_deg=(0, 90), tilt_factor=2)
    assert FeatureConfig.from_dict(json.loads(json.dumps(features.to_dict()))) == features
    assert FeatureConfig.from_dict({"tilt_factor": 2}).tilt_factor == 2.0  # JSON whole number for a float


@pytest.mark.parametrize("data, message", [
    ({"max_inliers": 3}, "unknown setting"),
    ({"min_inliers": "4"}, "number"),
    ({"min_inliers": True}, "number"),
    ({"min_inliers": 4.5}, "whole number"),
    ({"min_inliers": None}, "number"),  # parse_json turns NaN into None
    ({"ratio_test_max": 1.5}, "ratio_test_max"),
    ({"min_inliers": -1}, "min_inliers"),
    ({"ratio_test_max": float("inf")}, "finite"),
    ([], "JSON object"),
])
def test_damaged_settings_are_a_format_error(data: object, message: str) -> None:
    with pytest.raises(IndexFormatError, match=message):
        VerifyConfig.from_dict(data)


def test_bad_lists_are_a_format_error() -> None:
    for value in ([], [512, "256"], 512, [1.5]):
        with pytest.raises(IndexFormatError, match="reference_view_long_sides_px"):
            FeatureConfig.from_dict({"reference_view_long_sides_px": value})


def test_error_lines_quote_unknown_names_safely() -> None:
    with pytest.raises(IndexFormatError) as raised:
        VoteConfig.from_dict({"\x1b[2Jx": 1, "b": 2, "c": 3, "d" * 5000: 4, "e": 5})
    message = str(raised.value)
    assert "\x1b" not in message and "\\x1b" in message and "and 2 more" in message and len(message) < 300
