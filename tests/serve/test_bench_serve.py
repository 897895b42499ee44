"""scripts/bench_serve.py at its smallest size: it starts `pinid serve`, loads it, prints its table and stops it.

The script runs in a subprocess, as a person runs it, on the default sample
index (built from examples/catalogue with ``--encoder local``: no model).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_serve.py"
TIMEOUT_S = 300


def run_bench(*args: object, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``python scripts/bench_serve.py ARGS``, after ``prelude`` (Python run first, in the same process)."""
    code = f"{prelude}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, str(SCRIPT), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def table_rows(out: str) -> dict[str, dict[str, str]]:
    """The Markdown table's rows by their first cell (the client count), each as {column: cell}."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(header, row)) for row in rows}


def test_bench_serve_smallest_run() -> None:
    done = run_bench("--clients", 1, 2, "--requests", 6, "--warmup", 1, "--api-repeats", 3)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    rows = table_rows(done.stdout)
    assert sorted(rows) == ["1", "2"]
    for row in rows.values():
        assert row["requests"] == "6"
        assert (row["errors"], row["connection errors"], row["5xx (not 503)"], row["503s"]) == ("0", "0", "0", "0")
        # figures of 1,000 and more carry a thousands separator (a busy machine gets there)
        assert float(row["p50 ms"].replace(",", "")) > 0 and float(row["RSS after MB"].replace(",", "")) > 0
    assert "Python API p50 (PinIndex.identify, same photo, 3 repeats): " in done.stdout
    assert "(first match heart-gold)" in done.stdout  # the server's answers were checked against this pin
    ratio = next(line for line in done.stdout.splitlines() if line.startswith("server p50 at 1 client / API p50: "))
    float(ratio.split(": ")[1].split()[0])
    assert "alternating API and server calls (3 pairs, 1 client): server p50 " in done.stdout
    assert "- 0 errors and 0 5xx other than deliberate 503s: met" in done.stdout
    assert "server stopped on SIGTERM" in done.stdout


def test_a_url_off_this_machine_is_refused_before_any_traffic() -> None:
    refuse_sockets = ("import socket\n"
                      "def refused(*args, **kwargs):\n    raise SystemExit('a connection was attempted')\n"
                      "socket.socket.connect = socket.socket.connect_ex = refused\n"
                      "socket.create_connection = socket.getaddrinfo = refused\n")
    for url in ("http://10.0.0.1:8000", "http://example.com:8000", "http://localhost.example.com/",
                "http://0.0.0.0:8000"):
        done = run_bench("--url", url, prelude=refuse_sockets)
        assert done.returncode == 2, f"{url}: {done.stdout}\n{done.stderr}"
        assert "is not a loopback address" in done.stderr and "a connection was attempted" not in done.stderr
        assert done.stdout == ""
