"""The README's main job, typed as a user types it: the commands are read from the README itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _main_job_block() -> str:
    """The README's first code block (the one-command setup), with the output it shows as comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"## Try it on the sample catalogue.*?```bash\n(.*?)```", text, re.S).group(1)


def _main_job_commands() -> list[str]:
    """The pinid commands of the README's first code block."""
    joined = _main_job_block().replace("\\\n", " ")
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
    # the answer and the first row the README shows (its comment lines) are what a user gets
    shown = [line[1:].strip() for line in _main_job_block().splitlines() if line.startswith("#") and "..." not in line]
    assert shown[1] == "Red Heart (heart-gold), confidence >99%"
    got = [line.strip() for line in outputs[1].splitlines()]
    assert got[:4] == shown[:4]


def _service_commands() -> list[str]:
    """The commands of the README's "The service" block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## The service.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_service_commands_run_as_typed(tmp_path: Path) -> None:
    """`pinid serve -i examples/index` and the README's curl, on the README's port when it is free."""
    import os
    import signal
    import socket

    install, serve, curl = _service_commands()
    assert install == 'pip install -e ".[serve]"'
    assert serve == "pinid serve -i examples/index" and curl.startswith("curl -F image=@examples/photo.jpg ")
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("index"))
    pinid = Path(sys.executable).with_name("pinid")
    env = {"PATH": f"{pinid.parent}{os.pathsep}/usr/bin:/bin", "PINID_OFFLINE": "1", "HOME": str(tmp_path)}
    built = subprocess.run([str(pinid), "build-index", "examples/catalogue", "-o", "examples/index", "--encoder",
                            "local", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stderr
    args = serve.split()[1:]
    with socket.socket() as probe:  # the README's port 8000 if free here; else any free port, same command
        try:
            probe.bind(("127.0.0.1", 8000))
        except OSError:
            args += ["--port", "0"]
    server = subprocess.Popen([str(pinid), *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        assert first.startswith("pinid: serving examples/index (5 pins, generation 1) on http://127.0.0.1:"), first
        port = first.split("http://127.0.0.1:")[1].split("/")[0]
        while "Application startup complete" not in server.stderr.readline():
            assert server.poll() is None
        answer = subprocess.run(curl.replace(":8000/", f":{port}/").split()[:-1] + [
            curl.split()[-1].strip('"').replace(":8000/", f":{port}/")], cwd=tmp_path, capture_output=True,
            text=True, timeout=120)
        assert answer.returncode == 0, answer.stderr
        body = json.loads(answer.stdout)
        assert body["matches"][0]["pin_id"] == "heart-gold" and len(body["matches"]) == 3
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) in (0, 143)
