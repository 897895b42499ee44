"""Request counts, latencies and queue depth in Prometheus' text format, with no client library.

Routes are counted by their template (``/v1/pins/{pin_id}``), never by the
raw path, so a client cannot grow the metrics without bound.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Callable

#: Latency histogram buckets, in seconds: from a health check to a board photo.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Thread-safe counters for one app; ``render`` writes the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._busy = 0

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, status)] += 1
            buckets = self._buckets.setdefault(route, [0] * len(BUCKETS))
            for position, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[position] += 1
            self._sums[route] += seconds
            self._counts[route] += 1

    def count_busy(self) -> None:
        """One request refused with 503 because the pool was full."""
        with self._lock:
            self._busy += 1

    def render(self, gauges: dict[str, tuple[str, float]], rss_bytes: Callable[[], int | None]) -> str:
        """The exposition text: counters, histogram, and ``gauges`` (name -> (help, value)) read now."""
        lines = ["# HELP pinid_requests_total HTTP requests answered, by route template, method and status.",
                 "# TYPE pinid_requests_total counter"]
        with self._lock:
            for (route, method, status), count in sorted(self._requests.items()):
                lines.append(f'pinid_requests_total{{route="{_label(route)}",method="{method}",'
                             f'status="{status}"}} {count}')
            lines += ["# HELP pinid_request_duration_seconds Time from request to response, by route template.",
                      "# TYPE pinid_request_duration_seconds histogram"]
            for route in sorted(self._buckets):
                label = _label(route)
                for bound, count in zip(BUCKETS, self._buckets[route]):
                    lines.append(f'pinid_request_duration_seconds_bucket{{route="{label}",le="{bound}"}} {count}')
                lines.append(f'pinid_request_duration_seconds_bucket{{route="{label}",le="+Inf"}} '
                             f'{self._counts[route]}')
                lines.append(f'pinid_request_duration_seconds_sum{{route="{label}"}} {self._sums[route]:.6f}')
                lines.append(f'pinid_request_duration_seconds_count{{route="{label}"}} {self._counts[route]}')
            busy = self._busy
        lines += ["# HELP pinid_rejected_busy_total Requests refused with 503 because every worker and queue slot "
                  "was taken.", "# TYPE pinid_rejected_busy_total counter", f"pinid_rejected_busy_total {busy}"]
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        rss = rss_bytes()
        if rss is not None:
            lines += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
                      "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {rss}"]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux ``/proc``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")
