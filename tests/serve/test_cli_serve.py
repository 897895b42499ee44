"""`pinid serve` as a user runs it: a real process on loopback, stopped by SIGTERM, and its bad-input errors."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pinid import PinIndex, read_catalogue  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PINID = str(Path(sys.executable).with_name("pinid"))
PHOTO = ROOT / "examples" / "photo.jpg"


class Server:
    """A `pinid serve` subprocess: its port (from the first stderr line) and every line it wrote since."""

    def __init__(self, args: list[str], cwd: Path | None = None) -> None:
        self.process = subprocess.Popen([PINID, "serve", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "PINID_OFFLINE": "1"})
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = 0

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {self.seen}")

    def start(self) -> "Server":
        line = self.wait_for_line("pinid: serving")
        self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        self.wait_for_line("Application startup complete")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def post_photo(url: str, photo: Path = PHOTO, timeout: float = 60) -> tuple[int, dict]:
    boundary = "pinid-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{photo.name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-serve") / "index"
    PinIndex.build(read_catalogue(ROOT / "examples" / "catalogue"), path, None)
    return path


@pytest.fixture
def server(index_dir: Path) -> Iterator[Server]:
    running = Server(["-i", str(index_dir), "--port", "0"]).start()
    try:
        yield running
    finally:
        running.stop()


def test_serve_answers_over_http(server: Server) -> None:
    with urllib.request.urlopen(server.url("/healthz"), timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    status, body = post_photo(server.url("/v1/identify?k=2"))
    assert status == 200 and body["matches"][0]["pin_id"] == "heart-gold" and len(body["matches"]) == 2
    with urllib.request.urlopen(server.url("/"), timeout=10) as response:
        assert b"<html" in response.read().lower()


def test_sigterm_finishes_requests_in_flight_then_stops(server: Server) -> None:
    answers: list[tuple[int, dict]] = []
    clients = [threading.Thread(target=lambda: answers.append(post_photo(server.url("/v1/identify"))))
               for _ in range(3)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # SIGTERM once the requests are being worked on
        with urllib.request.urlopen(server.url("/metrics"), timeout=10) as response:
            if b"pinid_workers_busy 0" not in response.read():
                break
    code = server.stop()
    for client in clients:
        client.join(60)
    assert code in (0, 143), server.seen
    assert len(answers) == 3 and all(status == 200 for status, _ in answers), answers
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url("/healthz"), timeout=5)


def test_binds_to_loopback_by_default(server: Server) -> None:
    """The listening socket is 127.0.0.1:PORT, read from the kernel's table (no traffic to any other address)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("no /proc/net/tcp (not Linux)")
    listening = []
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) == server.port:  # 0A: LISTEN
            listening.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    assert listening == ["127.0.0.1"]


def run_serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PINID, "serve", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PINID_OFFLINE": "1"})


def assert_one_line_error(done: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pinid: error:") and text in lines[0], done.stderr


def test_bad_input_is_one_line_and_an_exit_code(index_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_serve("-i", str(tmp_path / "missing")), 5, "missing")
    assert_one_line_error(run_serve("-i", str(index_dir), "--host", "my-laptop"), 2, "not an IP address")
    assert_one_line_error(run_serve("-i", str(index_dir), "--admin-token-file", str(tmp_path / "none")), 2,
                          "--admin-token-file")
    short = tmp_path / "short-token"
    short.write_text("abc\n")
    assert_one_line_error(run_serve("-i", str(index_dir), "--admin-token-file", str(short)), 2, "at least 16")
    token = tmp_path / "token"
    token.write_text("a-long-enough-admin-token-123\n")
    token.chmod(0o600)
    assert_one_line_error(run_serve("-i", str(index_dir), "--admin-token-file", str(token), "--uploads-dir",
                                    str(index_dir / "uploads")), 2, "outside the index")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        assert_one_line_error(run_serve("-i", str(index_dir), "--port", port), 2, f"cannot listen on 127.0.0.1:{port}")


def test_admin_token_file_turns_admin_routes_on(index_dir: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    token = tmp_path / "token"
    token.write_text("a-long-enough-admin-token-123\n")
    token.chmod(0o644)
    running = Server(["-i", str(index), "--port", "0", "--admin-token-file", str(token)])
    try:
        warning = running.wait_for_line("can be read by other users")
        assert "chmod 600" in warning
        running.start()
        request = urllib.request.Request(running.url("/v1/admin/reload"), method="POST",
                                         headers={"Authorization": "Bearer a-long-enough-admin-token-123"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["generation"] == 1
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(running.url("/v1/admin/reload"), method="POST"), timeout=30)
        assert refused.value.code == 401
    finally:
        running.stop()
