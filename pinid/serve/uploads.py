"""What a client sends, checked before it costs memory: body size, image type and pixel count.

The body limit is enforced while the request streams in (a pure ASGI
middleware), so an oversized upload is refused after ``limit`` bytes, not
after it has been spooled to disk; the pixel count is read from the image
header before anything is decoded, so a decompression bomb is refused
before it costs its size in memory.
"""

from __future__ import annotations

import io
import json
from typing import Any, Awaitable, Callable

from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from ..images import load_image

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Room for multipart boundaries and form fields on top of the image itself.
MULTIPART_OVERHEAD = 64 * 1024


class ApiError(Exception):
    """An HTTP error with a JSON body: ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, int(declared))
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, received)

    async def _refuse(self, send: Send, size: int) -> None:
        body = error_body("payload_too_large", f"the request body is over the upload limit of "
                                               f"{_megabytes(self.limit - MULTIPART_OVERHEAD)} "
                                               f"(--max-upload-mb); {size:,} bytes or more were sent")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _megabytes(size: int) -> str:
    return f"{size / 1e6:g} MB"


def decode_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The uploaded bytes as an upright RGB image, or an ``ApiError`` (413 too many pixels, 415 not an image)."""
    if not data:
        raise ApiError(415, "not_an_image", f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "too_many_pixels", f"{name}: refused, too many pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(415, "not_an_image", f"{name}: not an image, or a format pinid cannot read "
                                            "(JPEG, PNG, WebP, GIF, BMP and TIFF work)") from None
    if width * height > max_pixels:
        raise ApiError(413, "too_many_pixels", f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels; "
                                               f"the limit is {max_pixels / 1e6:.0f}")
    try:
        return load_image(data)
    except ImageError as exc:
        if "too many pixels" in exc.reason:
            raise ApiError(413, "too_many_pixels", f"{name}: {exc.reason}") from None
        raise ApiError(415, "not_an_image", f"{name}: {exc.reason}") from None
