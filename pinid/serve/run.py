"""``pinid serve``: check everything a user gave, load the index once, then run uvicorn on one process.

Every check that can fail (the extra installed, the token file, the port,
the uploads folder, the index) runs before the model is loaded, or at least
before the first request, and fails with one ``PinidError`` line.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path
from typing import Callable

from ..errors import InputError

#: Seconds uvicorn waits for requests in flight after SIGTERM before it closes them.
GRACEFUL_SECONDS = 30


def serve_index(index_dir: Path, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 2, queue: int = 16,
                max_upload_mb: float = 20.0, admin_token_file: Path | None = None, uploads_dir: Path | None = None,
                cors_origins: tuple[str, ...] = (), device: str = "auto", offline: bool | None = None,
                threads: int | None = None, echo: Callable[[str], None] = print) -> None:
    """Serve ``index_dir`` until SIGTERM or Ctrl-C; ``echo`` gets the few lines a person at the terminal reads."""
    uvicorn = _require_extra()
    token = read_admin_token(admin_token_file, echo) if admin_token_file is not None else None
    if token is not None and uploads_dir is None:
        uploads_dir = index_dir.parent / f"{index_dir.name}-uploads"
    if uploads_dir is not None:
        check_uploads_dir(uploads_dir, index_dir)
    listener = bind(host, port)
    try:
        from ..index import PinIndex
        from .app import ServeOptions, create_app

        options = ServeOptions(workers=workers, queue=queue, max_upload_mb=max_upload_mb, admin_token=token,
                               uploads_dir=uploads_dir, cors_origins=cors_origins)
        index = PinIndex.load(index_dir, device=device, offline=offline)
        if index.encoder is not None:  # one pool of torch threads per worker would oversubscribe the cores
            import torch

            torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // workers))
        index.recogniser.prepare()  # not on the first request's time
        app = create_app(index, options)
        bound_host, bound_port = listener.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        echo(f"pinid: serving {index_dir} ({len(index)} pins, generation {index.generation}) on "
             f"http://{shown}:{bound_port}/ (API documentation at /docs); Ctrl-C stops")
        if not ipaddress.ip_address(bound_host).is_loopback:
            echo(f"pinid: listening on {bound_host}: other machines can reach this server")
        config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=GRACEFUL_SECONDS,
                                server_header=False, lifespan="on")
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()


def _require_extra():  # type: ignore[no-untyped-def]
    try:
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise InputError(f"pinid serve needs the serve extra ({exc.name} is missing): "
                         "pip install 'pinid[serve]'") from None
    return uvicorn


def read_admin_token(path: Path, echo: Callable[[str], None] = print) -> str:
    """The admin token in ``path`` (surrounding whitespace stripped); refused if missing, short or not text."""
    try:
        info = path.stat()
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"--admin-token-file {path}: {exc.strerror or exc}") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"--admin-token-file {path} is not text") from None
    if len(token) < 16 or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise InputError(f"--admin-token-file {path} must hold one token of at least 16 printable characters "
                         "without spaces (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        echo(f"pinid: warning: {path} can be read by other users (chmod 600 {path})")
    return token


def check_uploads_dir(folder: Path, index_dir: Path) -> None:
    """Refuse an uploads folder inside the index (a generation holds only its own files) or one that is a file."""
    resolved, index = folder.resolve(), index_dir.resolve()
    if resolved == index or index in resolved.parents or resolved in index.parents:
        raise InputError(f"--uploads-dir {folder} must be outside the index {index_dir} (and not hold it)")
    if resolved.exists() and not resolved.is_dir():
        raise InputError(f"--uploads-dir {folder} is not a folder")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use or a bad host is one clear error before the index loads."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise InputError(f"--host {host!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)") from None
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listener.set_inheritable(True)
    return listener
