"""What `pinid identify` prints is safe to read: valid JSON, no control characters, clear bad-k errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import draw_pin_image, run


@pytest.fixture
def odd_catalogue(tmp_path: Path) -> Path:
    """Two pins whose metadata holds NaN and whose name holds terminal escape sequences."""
    root = tmp_path / "cat"
    (root / "pin-0").mkdir(parents=True)
    (root / "pin-1").mkdir(parents=True)
    draw_pin_image(0).save(root / "pin-0" / "a.png")
    draw_pin_image(1).save(root / "pin-1" / "a.png")
    (root / "pin-0" / "pin.json").write_text('{"name": "Evil\\u001b[2J\\u001b]0;owned\\u0007 Pin", "price": NaN}')
    (root / "pin-1" / "pin.json").write_text('{"name": null, "weight": Infinity}')
    return root


def test_json_output_is_valid_and_terminal_output_has_no_control_characters(
        odd_catalogue: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys, "build-index", str(odd_catalogue), "-o", str(tmp_path / "idx"), "--encoder", "local")
    assert code == 0, err
    photo = odd_catalogue / "pin-0" / "a.png"
    code, out, _ = run(capsys, "identify", str(photo), "-i", str(tmp_path / "idx"), "--json")
    assert code == 0
    answers = json.loads(out, parse_constant=lambda name: pytest.fail(f"invalid JSON constant {name}"))
    assert answers[0]["matches"][0]["pin_id"] == "pin-0"
    assert answers[0]["matches"][0]["metadata"]["price"] is None
    code, out, _ = run(capsys, "identify", str(odd_catalogue / "pin-1" / "a.png"), "-i", str(tmp_path / "idx"),
                       "--json")
    best = json.loads(out)[0]["matches"][0]
    assert best["pin_id"] == "pin-1" and best["name"] == "pin-1"  # a null name is the pin id, not "None"
    code, out, _ = run(capsys, "identify", str(photo), "-i", str(tmp_path / "idx"))
    assert code == 0 and "Evil" in out
    assert not any(ord(ch) < 32 and ch != "\n" for ch in out), repr(out)
    code, out, _ = run(capsys, "info", str(tmp_path / "idx"), "--json")
    json.loads(out)


@pytest.mark.parametrize("k", ["0", "-3"])
def test_k_below_one_is_a_usage_error(odd_catalogue: Path, tmp_path: Path, k: str,
                                      capsys: pytest.CaptureFixture) -> None:
    from pinid.catalogue import read_catalogue
    from pinid.errors import InputError
    from pinid.index import PinIndex

    index = PinIndex.build(read_catalogue(odd_catalogue), tmp_path / "idx", None)
    with pytest.raises(InputError, match="k must be at least 1"):
        index.identify(odd_catalogue / "pin-0" / "a.png", k=int(k))
    code, _, err = run(capsys, "identify", str(odd_catalogue / "pin-0" / "a.png"), "-i", str(tmp_path / "idx"),
                       "-k", k)
    assert code == 2 and err.count("\n") == 1


@pytest.mark.parametrize("command", ["eval", "dedup"])
def test_threshold_nan_is_a_usage_error(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["eval", "-i", str(tmp_path), "--queries", str(tmp_path / "q.csv")] if command == "eval" else \
        ["dedup", str(tmp_path)]
    code, _, err = run(capsys, *args, "--threshold", "nan")
    assert code == 2 and "is not a number" in err and err.count("\n") == 1
