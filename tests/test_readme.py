"""The README's main job, typed as a user types it: the commands are read from the README itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _main_job_commands() -> list[str]:
    """The pinid commands of the README's first code block (the one-command setup)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Try it on the sample catalogue.*?```bash\n(.*?)```", text, re.S).group(1)
    joined = block.replace("\\\n", " ")
    commands = [part.strip() for line in joined.splitlines() if not line.lstrip().startswith("#")
                for part in line.split("&&")]
    return [command for command in commands if command.startswith("pinid ")]


def test_readme_main_job_runs_with_no_model(tmp_path: Path) -> None:
    commands = _main_job_commands()
    assert commands == ["pinid build-index examples/catalogue -o examples/index --encoder local",
                        "pinid identify examples/photo.jpg -i examples/index"]
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("index"))
    pinid = Path(sys.executable).with_name("pinid")
    outputs = []
    for command in commands:
        done = subprocess.run([str(pinid), *command.split()[1:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env={"PATH": str(pinid.parent), "PINID_OFFLINE": "1", "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "Red Heart (heart-gold), confidence >99%" in outputs[1]
    first = outputs[1].splitlines()[3].split()
    assert first[:2] == ["1", "heart-gold"]
