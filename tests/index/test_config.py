"""The local-feature settings travel with the index, and every long job reports progress one way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinid.catalogue import read_catalogue
from pinid.errors import IndexFormatError
from pinid.identify.recogniser import CandidateConfig, LocalConfig
from pinid.index import PinIndex
from pinid.index.format import MANIFEST_FILE
from pinid.local.features import FeatureConfig
from tests.support import write_catalogue


def test_build_records_the_config_and_queries_use_it(tmp_path: Path) -> None:
    config = LocalConfig(features=FeatureConfig(max_reference_features=300),
                         candidates=CandidateConfig(max_tries=2))
    stages: list[tuple[str, int, int]] = []
    PinIndex.build(read_catalogue(write_catalogue(tmp_path / "cat", pins=4)), tmp_path / "idx", None,
                   config=config, on_progress=lambda *args: stages.append(args))
    recorded = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())["local_config"]
    assert recorded["features"]["max_reference_features"] == 300 and recorded["candidates"]["max_tries"] == 2
    reopened = PinIndex.load(tmp_path / "idx", encoder=None)
    assert reopened.recogniser.config == config
    assert max(reopened.recogniser.store.feature_count(i) for i in range(4)) <= 300
    candidates, _ = reopened.verified_candidates(tmp_path / "cat" / "pin-0" / "a.png")
    assert 1 <= len(candidates) <= 2  # the recorded limit: two tries (one image may take both orientations)
    # an explicit limit wins: 8 tries reach all 4 images (in both orientations)
    assert len(reopened.verified_candidates(tmp_path / "cat" / "pin-0" / "a.png", candidates=8)[0]) == 4
    # one progress shape: (stage, done, total), done growing to total within a stage
    assert {stage for stage, _, _ in stages} == {"local features"}
    assert [done for _, done, _ in stages] == [1, 2, 3, 4] and {total for _, _, total in stages} == {4}
    photos = [tmp_path / "cat" / f"pin-{p}" / "a.png" for p in range(3)]
    heard: list[tuple[str, int, int]] = []
    reopened.identify_many(photos, on_progress=lambda *args: heard.append(args))
    assert heard == [("identifying", 1, 3), ("identifying", 2, 3), ("identifying", 3, 3)]


def test_an_index_without_recorded_settings_uses_the_defaults(tmp_path: Path) -> None:
    PinIndex.build(read_catalogue(write_catalogue(tmp_path / "cat", pins=2)), tmp_path / "idx", None)
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    del manifest["local_config"]  # as written before the settings were recorded
    (tmp_path / "idx" / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert PinIndex.load(tmp_path / "idx", encoder=None).recogniser.config == LocalConfig()


@pytest.mark.parametrize("damage", [{"features": {"max_reference_features": "many"}}, {"colour": {}}, [1, 2]],
                         ids=["wrong type", "unknown section", "not an object"])
def test_damaged_settings_are_a_format_error(tmp_path: Path, damage: object) -> None:
    PinIndex.build(read_catalogue(write_catalogue(tmp_path / "cat", pins=2)), tmp_path / "idx", None)
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    manifest["local_config"] = damage
    (tmp_path / "idx" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="rebuild"):
        PinIndex.load(tmp_path / "idx", encoder=None)
