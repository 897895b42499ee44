"""What `pinid serve` sustains under N concurrent clients: throughput, latency, errors and server memory.

Starts ``pinid serve -i INDEX --host 127.0.0.1 --port 0`` itself (the console
script beside this Python, as a user types it), waits for ``/readyz``, and
for each ``--clients`` value runs that many threads, each with its own
keep-alive connection, posting the same photo to ``/v1/identify`` until
``--requests`` requests are sent or ``--max-seconds`` have passed. It reports
throughput, p50/p99 latency of the 200 answers, errors (a connection error, a
status other than 200 and 503, or an answer naming another pin than the Python
API does), 5xx other than 503, deliberate 503s (pool full; the client waits
Retry-After and goes on), and the server's resident memory (``VmRSS`` of its
process after warm-up and after the run; ``VmHWM`` is its peak). The same
identification through the Python API (``PinIndex.identify`` in this process,
before the server starts) gives the baseline for the 1-client p50; the same
number of API and server calls, alternated after the runs, give a second
ratio that machine load drifting between runs cannot skew (the target is
judged on it)::

    python scripts/bench_serve.py --clients 1 8 --requests 1000

``--url http://127.0.0.1:PORT`` measures a server already running instead
(loopback only; memory is then read from its ``/metrics``); ``--index`` must
then be the index it serves. Without ``--index`` the sample index is built
from examples/catalogue (``--encoder local``) into a temporary folder. The
exit code is 0 whatever the figures; 1 only if the server did not start (or
``--url`` did not answer), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

import httpx
import numpy as np

if TYPE_CHECKING:
    from pinid.index import PinIndex

REPO = Path(__file__).resolve().parents[1]
#: The issue's targets (2 cores, sample index).
TARGET_CLIENTS, TARGET_REQUESTS, TARGET_RSS_GROWTH_MB, TARGET_RATIO = 8, 1000, 50.0, 1.2
START_SECONDS = 180  # index and model load, then /readyz
STOP_SECONDS = 40  # after SIGTERM (the server lets requests in flight finish for 30 s), then kill
MB = 1024 * 1024


# ---------------------------------------------------------------- the server
def loopback_url(url: str) -> str:
    """``url`` without a trailing slash, or ``ValueError`` unless it is http(s) on a loopback host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"--url {url!r} is not an http:// URL")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--url {url!r}: refused, {host} is not a loopback address (127.0.0.0/8, ::1, localhost); "
                         "this script only loads servers on this machine")
    return url.rstrip("/")


@dataclass
class Server:
    """A ``pinid serve`` process started by this script; its stderr is drained so that it never blocks."""

    process: subprocess.Popen[str]
    url: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)  # stderr lines until it closes

    @property
    def pid(self) -> int:
        return self.process.pid


def serve_command(index: Path, workers: int, queue_size: int) -> list[str]:
    script = Path(sys.executable).parent / "pinid"
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "pinid.cli"]
    return [*launcher, "serve", "-i", str(index), "--host", "127.0.0.1", "--port", "0",
            "--workers", str(workers), "--queue", str(queue_size)]


def launch(command: list[str]) -> Server:
    """Start ``command`` with its stderr drained into ``Server.tail`` (uvicorn logs every request there)."""
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, bufsize=1)
    server = Server(process)

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            server.tail.append(line.rstrip("\n"))
            if not server.url:
                server.lines.put(line)
        server.lines.put(None)

    threading.Thread(target=drain, name="server-stderr", daemon=True).start()
    return server


def wait_serving(server: Server, deadline_s: float) -> None:
    """Read the URL from the server's first stderr line, then wait for /readyz; ``RuntimeError`` if not."""
    deadline = time.monotonic() + deadline_s
    while not server.url:
        try:
            line = server.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"no 'serving ... on http://...' line within {deadline_s:.0f} s") from None
        if line is None:
            raise RuntimeError(f"the server exited with code {server.process.wait()} before serving")
        if line.startswith("pinid: serving ") and " on http://" in line:
            server.url = line.split(" on ", 1)[1].split("/ ", 1)[0].rstrip("/")
    wait_ready(server.url, deadline, server.process)


def wait_ready(url: str, deadline: float, process: subprocess.Popen[str] | None = None) -> None:
    """Poll ``url``/readyz until it answers 200, the process dies or the deadline passes."""
    with httpx.Client(base_url=url, timeout=5) as client:
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/readyz did not answer 200 in time")
            time.sleep(0.1)


def stop_server(server: Server) -> str:
    """SIGTERM, then kill after ``STOP_SECONDS``; says how it ended."""
    process = server.process
    if process.poll() is not None:
        return f"the server had already exited (code {process.returncode})"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_SECONDS)
        return f"server stopped on SIGTERM in {time.monotonic() - started:.1f} s (exit code {code})"
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"server did not stop within {STOP_SECONDS} s of SIGTERM: killed"


def memory_mb(pid: int | None, url: str) -> tuple[float | None, float | None]:
    """Resident and peak resident MB of the server: /proc/PID/status, else (no pid) RSS from /metrics."""
    if pid is not None:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":" in line)
            return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):
            return None, None
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None, None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / MB, None
    return None, None


# ---------------------------------------------------------------- the load
@dataclass
class Run:
    """What one ``--clients`` value saw: every request's status, and the latency of each 200."""

    clients: int
    budget: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, of 200 answers only
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "503", "connection: ReadError", ...
    wrong: int = 0  # 200 answers whose first match is not the Python API's pin
    stopped_early: bool = False
    rss: tuple[float | None, float | None] = (None, None)  # MB before (after warm-up), after
    hwm: float | None = None

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def busy(self) -> int:
        return self.statuses["503"]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.isdigit() and status.startswith("5")
                   and status != "503")

    @property
    def connection_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("connection"))

    @property
    def errors(self) -> int:
        """Requests that did not get the right answer, apart from deliberate 503s."""
        return sum(n for status, n in self.statuses.items() if status not in ("200", "503")) + self.wrong

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else None


def post_photo(client: httpx.Client, photo: bytes, name: str) -> httpx.Response:
    return client.post("/v1/identify", files={"image": (name, photo, "image/jpeg")})


def drive(url: str, photo: bytes, name: str, expected_pin: str | None, clients: int, budget: int,
          max_seconds: float, timeout_s: float) -> Run:
    """``clients`` threads, one connection each, posting ``photo`` until ``budget`` requests or ``max_seconds``."""
    run = Run(clients, budget)
    lock = threading.Lock()
    tickets = iter(range(budget))
    deadline = time.monotonic() + max_seconds

    def take() -> bool:
        with lock:
            if time.monotonic() >= deadline:
                run.stopped_early = run.stopped_early or next(tickets, None) is not None
                return False
            return next(tickets, None) is not None

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            while take():
                started = time.perf_counter()
                wait, wrong = 0.0, False
                try:
                    response = post_photo(client, photo, name)
                    status = str(response.status_code)
                except httpx.TransportError as exc:
                    status = f"connection: {type(exc).__name__}"
                except httpx.HTTPError as exc:
                    status = f"client: {type(exc).__name__}"
                elapsed = time.perf_counter() - started
                if status == "200":
                    try:
                        body = response.json()
                        first = (body.get("matches") or [{}])[0]
                        wrong = expected_pin is not None and first.get("pin_id") != expected_pin
                    except (ValueError, AttributeError, IndexError):
                        status = "200 (not the answer's JSON)"
                elif status == "503":
                    retry_after = response.headers.get("Retry-After", "1")
                    wait = float(retry_after) if retry_after.isdigit() else 1.0
                with lock:
                    run.statuses[status] += 1
                    run.wrong += wrong
                    if status == "200":
                        run.latencies.append(elapsed)
                if wait:
                    time.sleep(min(wait, max(0.0, deadline - time.monotonic())))

    threads = [threading.Thread(target=client_loop, name=f"client-{n}") for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    return run


# ---------------------------------------------------------------- baseline
def api_baseline(index: PinIndex, photo: Path, repeats: int, warmup: int) -> tuple[float, str | None]:
    """p50 ms of ``index.identify(photo)`` in this process, and the pin it names first."""
    answer = None
    for _ in range(warmup):
        answer = index.identify(photo)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = index.identify(photo)
        times.append(time.perf_counter() - started)
    first = answer.matches[0].pin_id if answer is not None and answer.matches else None
    return float(np.median(times)) * 1000, first


def paired(index: PinIndex, url: str, photo: Path, repeats: int, timeout_s: float) -> tuple[float, float]:
    """p50 ms of the Python API and of the server at 1 client, timed alternately so that both see the same load
    (on a shared machine the load drifts between a run and a baseline taken minutes apart)."""
    data = photo.read_bytes()
    api, server = [], []
    with httpx.Client(base_url=url, timeout=timeout_s) as client:
        post_photo(client, data, photo.name).raise_for_status()
        for _ in range(repeats):
            started = time.perf_counter()
            index.identify(photo)
            api.append(time.perf_counter() - started)
            started = time.perf_counter()
            post_photo(client, data, photo.name).raise_for_status()
            server.append(time.perf_counter() - started)
    return float(np.median(api)) * 1000, float(np.median(server)) * 1000


def sample_index(folder: Path) -> Path:
    from pinid import read_catalogue
    from pinid.index import PinIndex

    return PinIndex.build(read_catalogue(REPO / "examples" / "catalogue"), folder / "sample-index", None).path


# ---------------------------------------------------------------- report
def number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(runs: list[Run]) -> Iterator[str]:
    yield ("| clients | requests | seconds | req/s | p50 ms | p99 ms | errors | connection errors "
           "| 5xx (not 503) | 503s "
           "| RSS before MB | RSS after MB | RSS growth MB | peak RSS MB |")
    yield "|" + "---:|" * 14
    for run in runs:
        before, after = run.rss
        growth = after - before if before is not None and after is not None else None
        throughput = len(run.latencies) / run.seconds if run.seconds else 0.0
        yield (f"| {run.clients} | {run.sent:,} | {run.seconds:.1f} | {throughput:.2f} | "
               f"{number(run.percentile_ms(50))} | {number(run.percentile_ms(99))} | {run.errors} | "
               f"{run.connection_errors} | {run.server_errors} | {run.busy} | {number(before)} | {number(after)} | "
               f"{number(growth)} | {number(run.hwm)} |")


def verdicts(runs: list[Run], api_p50: float, pair: tuple[float, float] | None) -> Iterator[str]:
    """One line per target of the issue: met or missed, and on what run it was judged."""
    def size(run: Run) -> str:
        note = "" if run.clients >= TARGET_CLIENTS and run.sent >= TARGET_REQUESTS else (
            f"; the target is stated for {TARGET_CLIENTS} clients x {TARGET_REQUESTS:,} requests")
        return f"{run.clients} clients, {run.sent:,} requests{note}"

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    yield "Targets (2 cores, sample index):"
    judged = max(runs, key=lambda run: run.clients)
    clean = all(run.errors == 0 and run.server_errors == 0 for run in runs)
    yield (f"- 0 errors and 0 5xx other than deliberate 503s: {mark(clean)} (every run; the largest: "
           f"{size(judged)})")
    before, after = judged.rss
    growth = after - before if before is not None and after is not None else None
    yield (f"- RSS growth <= {TARGET_RSS_GROWTH_MB:.0f} MB over the run: "
           f"{mark(None if growth is None else growth <= TARGET_RSS_GROWTH_MB)} ({number(growth)} MB at "
           f"{size(judged)})")
    single = next((run for run in runs if run.clients == 1), None)
    p50 = single.percentile_ms(50) if single is not None else None
    ratios = []
    if p50 is not None and api_p50 > 0:
        ratios.append(f"1-client run {p50:.1f} / API {api_p50:.1f} ms = {p50 / api_p50:.2f}")
    if pair is not None:
        ratios.append(f"alternating {pair[1]:.1f} / {pair[0]:.1f} ms = {pair[1] / pair[0]:.2f}, judged")
    ratio = pair[1] / pair[0] if pair is not None else (p50 / api_p50 if p50 is not None and api_p50 > 0 else None)
    verdict = mark(None if ratio is None else ratio <= TARGET_RATIO)
    yield (f"- p50 at 1 client <= {TARGET_RATIO}x the Python API: {verdict} ({'; '.join(ratios) or 'no 1-client run'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=None,
                        help="index to serve [default: the sample index, built into a temporary folder]")
    parser.add_argument("--photo", type=Path, default=REPO / "examples" / "photo.jpg")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients, one run each")
    parser.add_argument("--requests", type=int, default=1000, help="requests per run, shared by its clients")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="per run: stop taking requests after this (1,000 requests at 1 client take ~6 min on 2 cores)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="requests per client before each run, and API calls before timing (not counted)")
    parser.add_argument("--api-repeats", type=int, default=30, help="timed PinIndex.identify calls for the baseline")
    parser.add_argument("--workers", type=int, default=2, help="pinid serve --workers")
    parser.add_argument("--queue", type=int, default=16, help="pinid serve --queue")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--url", default=None, help="a running server on this machine (loopback only)")
    args = parser.parse_args()
    if args.url is not None:
        try:
            args.url = loopback_url(args.url)
        except ValueError as exc:
            parser.error(str(exc))
    if min(args.clients) < 1 or min(args.requests, args.api_repeats) < 1 or args.max_seconds <= 0 or args.warmup < 0:
        parser.error("--clients, --requests and --api-repeats must be at least 1, --max-seconds above 0")
    photo = args.photo.read_bytes()

    runs: list[Run] = []
    stopped = pair = None
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        index_dir = args.index or sample_index(Path(scratch))
        from pinid.index import PinIndex

        index = PinIndex.load(index_dir)
        api_p50, expected_pin = api_baseline(index, args.photo, args.api_repeats, max(1, args.warmup))
        server = launch(serve_command(index_dir, args.workers, args.queue)) if args.url is None else None
        try:
            if server is not None:
                try:
                    wait_serving(server, START_SECONDS)
                except RuntimeError as exc:
                    tail = "\n".join(server.tail)
                    print(f"bench_serve: {' '.join(server.process.args)}: {exc}\n{tail}", file=sys.stderr)
                    return 1
            else:
                try:
                    wait_ready(args.url, time.monotonic() + 10)
                except RuntimeError as exc:
                    print(f"bench_serve: {exc}", file=sys.stderr)
                    return 1
            url = server.url if server is not None else args.url
            pid = server.pid if server is not None else None
            for clients in args.clients:
                if args.warmup:  # at the run's concurrency, so that every worker thread has its buffers
                    drive(url, photo, args.photo.name, None, clients, args.warmup * clients, args.max_seconds,
                          args.timeout)
                before, _ = memory_mb(pid, url)
                run = drive(url, photo, args.photo.name, expected_pin, clients, args.requests, args.max_seconds,
                            args.timeout)
                after, run.hwm = memory_mb(pid, url)
                run.rss = (before, after)
                runs.append(run)
            pair = paired(index, url, args.photo, args.api_repeats, args.timeout)
        finally:
            if server is not None:
                stopped = stop_server(server)

    load = os.getloadavg()
    how = f"started by this script with --workers {args.workers} --queue {args.queue}" if server else "already running"
    print(f"pinid serve at {url} ({how}), index {index_dir}, photo {args.photo.name}, "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    for line in table(runs):
        print(line)
    print()
    for run in runs:
        if run.stopped_early:
            print(f"- {run.clients} clients: stopped early at --max-seconds {args.max_seconds:g}, after "
                  f"{run.sent:,} of {run.budget:,} requests")
        other = {status: n for status, n in run.statuses.items() if status not in ("200",)}
        if other or run.wrong:
            print(f"- {run.clients} clients: answers other than 200: {dict(sorted(other.items()))}; "
                  f"200 naming another pin than the API: {run.wrong}")
    print(f"Python API p50 (PinIndex.identify, same photo, {args.api_repeats} repeats): {api_p50:.1f} ms "
          f"(first match {expected_pin})")
    single = next((run for run in runs if run.clients == 1), None)
    p50 = single.percentile_ms(50) if single is not None else None
    ratio = f"{p50 / api_p50:.2f}" if p50 is not None and api_p50 > 0 else "n/a"
    print(f"server p50 at 1 client / API p50: {ratio} (target <= {TARGET_RATIO})")
    if pair is not None:
        print(f"alternating API and server calls ({args.api_repeats} pairs, 1 client): server p50 {pair[1]:.1f} ms / "
              f"API p50 {pair[0]:.1f} ms = {pair[1] / pair[0]:.2f}")
    print()
    for line in verdicts(runs, api_p50, pair):
        print(line)
    if stopped:
        print(stopped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
