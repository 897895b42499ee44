"""A bounded pool for identification work, so that load never becomes unbounded threads or memory.

Requests beyond ``workers + queue`` are refused at once (the caller answers
503 with ``Retry-After``) instead of waiting in an ever-growing queue. A slot
is freed when the work ends, not when the client goes away: a client that
disconnects cannot make room for more work than the pool can hold.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the queue is full: try again shortly."""


class WorkPool:
    """``workers`` threads and at most ``queue`` waiting calls; :meth:`run` refuses the rest with ``Busy``."""

    def __init__(self, workers: int, queue: int) -> None:
        if workers < 1 or queue < 0:
            raise ValueError("a pool needs at least 1 worker and a queue of 0 or more")
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pinid-work")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0

    @property
    def running(self) -> int:
        """Calls being worked on now."""
        return self._running

    @property
    def queued(self) -> int:
        """Calls admitted and waiting for a worker."""
        with self._lock:
            return self._admitted - self._running

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on a worker thread, or raise ``Busy`` at once if the pool is full."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise Busy
            self._admitted += 1
        try:
            future = self._executor.submit(self._work, function, *args)
        except RuntimeError:  # shut down
            self._leave()
            raise Busy from None
        future.add_done_callback(self._left_unstarted)
        return await asyncio.wrap_future(future)

    def _work(self, function: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._running += 1
        try:
            return function(*args)
        finally:
            with self._lock:
                self._running -= 1
            self._leave()

    def _left_unstarted(self, future: Future) -> None:
        if future.cancelled():  # cancelled before a worker took it: _work never ran to free the slot
            self._leave()

    def _leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        """Finish the work already admitted, then stop the threads."""
        self._executor.shutdown(wait=True)
