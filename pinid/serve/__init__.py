"""``pinid serve``: an HTTP API and a web page over one loaded index.

Needs the ``serve`` extra (``pip install 'pinid[serve]'``: FastAPI, uvicorn,
python-multipart). ``create_app(PinIndex.load(path), ServeOptions())`` gives
the ASGI app; the CLI runs it with uvicorn in one process, so the model is
loaded once and shared by a bounded pool of worker threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServeOptions, create_app

__all__ = ["ServeOptions", "create_app"]


def __getattr__(name: str) -> Any:  # FastAPI is imported when the service is used, not with pinid
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
