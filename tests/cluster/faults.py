"""Encoders that fail on purpose inside Ray actors: a worker process killed mid-build, a job interrupted.

They wrap a real encoder and are loaded by the actors themselves (``EncodeWorker``'s
``load_encoder``), so the failure happens where it would in production: in the worker.
Which batch fails is decided by marker files, shared by all actors of one test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, Callable


class _Wrapped:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.image_size = inner.image_size
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()


class _KillsItsWorker(_Wrapped):
    def __init__(self, inner: Any, marker: Path) -> None:
        super().__init__(inner)
        self.marker = marker

    def encode_images(self, sources: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 2 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the actor's process dies mid-job, as on a lost node
        return self.inner.encode_images(sources, **kwargs)


class KillOnce:
    """Loads the real encoder; the first actor to reach its second batch kills its own process."""

    def __init__(self, load: Callable[[], Any], marker: Path) -> None:
        self.load, self.marker = load, marker

    def __call__(self) -> Any:
        return _KillsItsWorker(self.load(), self.marker)


class _StopsAfter(_Wrapped):
    def __init__(self, inner: Any, counter: Path, batches: int) -> None:
        super().__init__(inner)
        self.counter, self.batches = counter, batches

    def encode_images(self, sources: Any, **kwargs: Any) -> Any:
        with open(self.counter, "a") as handle:  # one line per batch, over all actors
            handle.write(f"{len(sources)}\n")
        if len(self.counter.read_text().splitlines()) > self.batches:
            raise RuntimeError("simulated failure: the job stops here")
        return self.inner.encode_images(sources, **kwargs)


class StopAfter:
    """Loads the real encoder; every batch after the first ``batches`` (over all actors) fails.

    Every batch asked for is counted in ``counter`` (one line, its size), so with a large
    ``batches`` it counts what a run encoded.
    """

    def __init__(self, load: Callable[[], Any], counter: Path, batches: int) -> None:
        self.load, self.counter, self.batches = load, counter, batches

    def __call__(self) -> Any:
        return _StopsAfter(self.load(), self.counter, self.batches)
