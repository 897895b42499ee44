"""The HTTP API and web page over one loaded index: ``create_app(index, ServeOptions())``.

The index and its model are loaded once, by the caller; every request that
identifies, checks or searches runs on a bounded :class:`WorkPool`, and a
request that finds it full gets 503 with ``Retry-After`` at once. Errors are
JSON (``{"error": code, "message": ...}``), never a traceback. Clients never
name a file: uploads are held in memory (a listing check writes its upload to
a private temporary folder), and reference thumbnails are read only from the
paths in the index's own image table, chosen by pin id and image number.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path, PurePath
from typing import Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..catalogue import Catalogue, PinRecord
from ..errors import (EncoderMismatchError, ImageError, IndexFormatError, InputError, LocalOnlyError,
                      PinidError)
from ..images import load_image, working_copy
from ..index import PinIndex
from ..index.change import ChangeReport
from ..tables import clean_text, has_control_characters
from .metrics import Metrics, resident_bytes
from .uploads import MULTIPART_OVERHEAD, ApiError, BodyLimit, decode_upload
from .work import Busy, WorkPool

#: Seconds a client is asked to wait after a 503 (pool full).
RETRY_AFTER_SECONDS = 1
MAX_PIN_ID_LENGTH = 200
THUMBNAIL_SIDES = (64, 128, 256, 384, 512, 1024)


@dataclass(frozen=True)
class ServeOptions:
    """How the service runs; the CLI's ``pinid serve`` options."""

    workers: int = 2  # identification threads
    queue: int = 16  # requests that may wait for a worker; beyond them, 503
    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000  # an upload's width x height, read from its header before decoding
    admin_token: str | None = None  # None: admin routes answer 401 to everyone
    uploads_dir: Path | None = None  # where admin-added reference images are kept (by content hash)
    cors_origins: tuple[str, ...] = ()  # none: no CORS headers at all
    max_k: int = 50

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue < 0:
            raise InputError("--workers must be at least 1 and --queue at least 0")
        if not self.max_upload_mb > 0:
            raise InputError("--max-upload-mb must be above 0")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise InputError("the admin token must be at least 16 characters")

    @property
    def upload_limit(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


@dataclass
class _Service:
    """What the routes share: the index, the pool, the metrics and a thumbnail cache."""

    index: PinIndex
    options: ServeOptions
    pool: WorkPool
    metrics: Metrics = field(default_factory=Metrics)
    thumbnails: dict[tuple[str, int, int, str], bytes] = field(default_factory=dict)  # newest last, at most 512
    thumbnails_lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = True

    async def run(self, function: Any, *args: Any) -> Any:
        try:
            return await self.pool.run(function, *args)
        except Busy:
            self.metrics.count_busy()
            raise ApiError(503, "busy", f"all {self.pool.workers} workers are busy and the queue is full; "
                                        f"retry in {RETRY_AFTER_SECONDS} s",
                           {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    # ------------------------------------------------------------- answers
    def identify(self, data: bytes, name: str, k: int, multi: bool) -> dict[str, Any]:
        photo = decode_upload(data, name, self.options.max_pixels)
        if multi:
            found = self.index.identify_multi(photo)
            return {"query": name, "error": None, "image_size": list(photo.size),
                    "pins": [self.public_match(item.to_dict()) for item in found]}
        answer = self.index.identify_many([photo], k=k)[0]
        body = answer.to_dict()
        body.update(query=name, image_size=list(photo.size),
                    matches=[self.public_match(match) for match in body["matches"]])
        return body

    def check_listing(self, data: bytes, name: str, listing_id: str, mode: str) -> dict[str, Any]:
        from ..dedup import DedupOptions, match_against
        from ..dedup.against import against_encoder
        from ..dedup.listings import Listing
        from ..encoder.cache import EmbeddingCache

        encoder = against_encoder(self.index)
        decode_upload(data, name, self.options.max_pixels)  # 413/415 before any work
        with tempfile.TemporaryDirectory(prefix="pinid-listing-") as folder:
            photo = Path(folder) / "upload"  # the exact bytes: "exact_file" compares content hashes
            photo.write_bytes(data)
            cache = EmbeddingCache.open(Path(folder) / "cache", encoder.identity())
            row = match_against(self.index, [Listing(listing_id, photo)], cache, DedupOptions(mode=mode)).rows[0]
        match_url = self.image_url(row.match_pin_id, row.match_image) if row.match_pin_id else None
        return {"listing_id": listing_id, "query": name, "status": row.status, "reason": row.reason,
                "match_pin_id": row.match_pin_id or None,
                "match_image": PurePath(row.match_image).name if row.match_image else None,
                "match_image_url": match_url,
                "score": None if row.score is None else round(float(row.score), 6),
                "phash_distance": row.phash_distance, "error": row.error or None}

    def search(self, text: str, k: int) -> dict[str, Any]:
        matches = self.index.search_text(text, k=k)
        return {"query": text, "matches": [self.public_match(match.to_dict()) for match in matches]}

    def public_match(self, match: dict[str, Any]) -> dict[str, Any]:
        """A match for clients: the reference image's file name and URL instead of its path on this server."""
        path = match.get("reference_image") or ""
        return {**match, "reference_image": PurePath(path).name if path else None,
                "reference_image_url": self.image_url(match["pin_id"], path),
                "pin_url": f"/v1/pins/{quote(match['pin_id'], safe='')}"}

    def image_url(self, pin_id: str, path: str) -> str | None:
        try:
            number = self.index.reference_images(pin_id).index(path)
        except ValueError:
            return None
        return f"/v1/pins/{quote(pin_id, safe='')}/images/{number}"

    def pin(self, pin_id: str) -> PinRecord:
        record = self.index.pin(pin_id)
        if record is None:
            raise ApiError(404, "unknown_pin", f"no pin {pin_id!r} in this index")
        return record

    def thumbnail(self, pin_id: str, number: int, side: int) -> bytes:
        record = self.pin(pin_id)
        if not 0 <= number < len(record.images):
            raise ApiError(404, "unknown_image", f"pin {pin_id!r} has {len(record.images)} reference image(s), "
                                                 f"numbered from 0")
        path = str(record.images[number])
        key = (pin_id, number, side, path)
        with self.thumbnails_lock:
            cached = self.thumbnails.get(key)
        if cached is not None:
            return cached
        try:
            image = load_image(path)
        except ImageError as exc:
            raise ApiError(404, "image_unavailable", f"reference image {number} of pin {pin_id!r} cannot be read "
                                                     f"where the index recorded it ({exc.reason})") from None
        small, _ = working_copy(image, side)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=85)
        with self.thumbnails_lock:  # worker threads share the cache
            while len(self.thumbnails) >= 512:
                self.thumbnails.pop(next(iter(self.thumbnails)))
            self.thumbnails[key] = out.getvalue()
        return out.getvalue()

    # -------------------------------------------------------------- admin
    def change_pin(self, action: Literal["add", "update"], pin_id: str, name: str | None,
                   metadata: dict[str, Any], uploads: list[tuple[str, bytes]]) -> dict[str, Any]:
        images = [self._keep_upload(data, upload_name) for upload_name, data in uploads]
        known = self.index.pin(pin_id)
        record = PinRecord(pin_id, clean_text(name) if name else (known.name if known else pin_id),
                           metadata if metadata or known is None else known.metadata, tuple(images))
        catalogue = Catalogue(self._uploads_dir(), [record])
        report = self.index.add(catalogue) if action == "add" else self.index.update(catalogue)
        self.index.recogniser.prepare()  # the new generation's, before the next answer needs it
        return _change_json(report)

    def remove_pin(self, pin_id: str) -> dict[str, Any]:
        report = self.index.remove([pin_id])
        self.index.recogniser.prepare()
        return _change_json(report)

    def reload(self) -> dict[str, Any]:
        changed = self.index.reload()
        self.index.recogniser.prepare()
        with self.thumbnails_lock:
            self.thumbnails.clear()
        return {"reloaded": changed, "generation": self.index.generation, "pins": len(self.index)}

    def _uploads_dir(self) -> Path:
        if self.options.uploads_dir is None:
            raise ApiError(409, "no_uploads_dir", "adding pins needs a folder to keep their images: start "
                                                  "pinid serve with --uploads-dir")
        return self.options.uploads_dir

    def _keep_upload(self, data: bytes, name: str) -> Path:
        """Store an uploaded reference image by its content hash (its name never reaches the file system)."""
        decode_upload(data, name, self.options.max_pixels)
        with Image.open(io.BytesIO(data)) as probe:
            suffix = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                      "TIFF": ".tif"}.get(probe.format or "", ".img")
        folder = self._uploads_dir()
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (hashlib.sha256(data).hexdigest() + suffix)
        if not target.exists():
            partial = target.with_name(f".{target.name}.partial")
            partial.write_bytes(data)
            partial.replace(target)
        return target


def _change_json(report: ChangeReport) -> dict[str, Any]:
    """The report for a client: skipped images by file name only (no path of this server's disk)."""
    return {**asdict(report), "changed": report.changed, "seconds": round(report.seconds, 3),
            "skipped": [{"image": PurePath(where).name, "reason": why} for where, why in report.skipped]}


def _status_of(error: PinidError) -> int:
    if isinstance(error, ImageError):
        return 415
    if isinstance(error, (LocalOnlyError, EncoderMismatchError)):
        return 409
    if isinstance(error, IndexFormatError):
        return 503
    return 400


def _code_of(error: PinidError) -> str:
    return {415: "not_an_image", 409: "not_supported_by_index", 503: "index_unavailable"}.get(
        _status_of(error), "bad_request")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _upload_name(upload: UploadFile) -> str:
    """The client's file name, as plain text for echoing (never used as a path)."""
    return clean_text(PurePath((upload.filename or "").replace("\\", "/")).name, "upload")[:200]


def create_app(index: PinIndex, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The FastAPI app serving ``index`` (already loaded with its encoder). Run it with uvicorn, one process."""
    from contextlib import asynccontextmanager

    from fastapi_offline import FastAPIOffline

    service = _Service(index, options, WorkPool(options.workers, options.queue))

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        service.ready = False
        service.pool.shutdown()  # uvicorn has let in-flight requests finish; their work is done

    app = FastAPIOffline(title="pinid", version=__version__, lifespan=lifespan, favicon_url="/static/favicon.svg",
                         description="Which pin is this? Identify enamel pins from photos against a reference "
                                     "catalogue. Every error is JSON: `{\"error\": code, \"message\": text}`.")
    app.state.pinid = service
    static = resources.files("pinid.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    app.add_middleware(BodyLimit, limit=options.upload_limit + MULTIPART_OVERHEAD)
    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            service.metrics.observe(template, request.method, status, time.perf_counter() - started)

    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(PinidError)
    async def pinid_error(request: Request, exc: PinidError) -> JSONResponse:
        return _error(_status_of(exc), _code_of(exc), str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                      getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in error.get('loc', ())[1:]) or 'request'}: {error.get('msg')}"
                             for error in exc.errors())
        return _error(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_error", "internal error (a bug: the server log has the details)")


def _add_routes(app: FastAPI, service: _Service) -> None:
    bearer = HTTPBearer(auto_error=False, description="the token in the file given to --admin-token-file")

    def admin(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        token = service.options.admin_token
        if token is None:
            raise ApiError(401, "unauthorized", "admin routes are off: start pinid serve with --admin-token-file",
                           {"WWW-Authenticate": "Bearer"})
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "admin routes need the header 'Authorization: Bearer TOKEN' with "
                                                "the token from --admin-token-file", {"WWW-Authenticate": "Bearer"})

    image_field = File(..., description="the photo (JPEG, PNG, WebP, ...)")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = (resources.files("pinid.serve") / "static" / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": _PAGE_POLICY})

    @app.post("/v1/identify", tags=["identify"], summary="Which pin is this photo? (or every pin on a board)")
    async def identify(image: UploadFile = image_field,
                       k: int = Query(5, ge=1, le=service.options.max_k, description="pins to list"),
                       multi: bool = Query(False, description="find every pin on a board or lanyard photo")
                       ) -> JSONResponse:
        """The fields of `pinid identify --json` (with `multi`, of `identify --multi --json`), plus
        `image_size` (the upright photo's width and height, which polygons refer to) and, per match,
        `reference_image_url` and `pin_url`; `reference_image` is the file name only."""
        data = await image.read()
        return JSONResponse(await service.run(service.identify, data, _upload_name(image), k, multi))

    @app.post("/v1/listings/check", tags=["listings"], summary="Is this listing photo new, or a duplicate?")
    async def check_listing(image: UploadFile = image_field,
                            mode: Literal["photo", "pin"] = Query("photo", description="photo: re-uploads of one "
                                                                  "picture; pin: any photo of the same pin"),
                            listing_id: str = Query("upload", max_length=200)) -> JSONResponse:
        """As `pinid dedup --against INDEX`: `status` is `new` or `duplicate` (of `match_pin_id`, because
        `reason`). Needs an index with CLIP vectors (409 for `--encoder local`)."""
        data = await image.read()
        return JSONResponse(await service.run(service.check_listing, data, _upload_name(image), listing_id, mode))

    @app.get("/v1/search", tags=["identify"], summary="Pins by description (CLIP text search)")
    async def search(q: str = Query(..., min_length=1, max_length=500, description="e.g. gold fox with a red rim"),
                     k: int = Query(5, ge=1, le=service.options.max_k)) -> JSONResponse:
        """Pins ranked by CLIP text-image similarity; 409 on an index without CLIP vectors."""
        return JSONResponse(await service.run(service.search, q, k))

    @app.get("/v1/index", tags=["catalogue"], summary="What this index holds and which endpoints it supports")
    async def index_info() -> dict[str, Any]:
        index = service.index
        encoder = index.manifest.encoder
        clip = index.has_vectors and index.encoder is not None
        return {"pins": len(index), "images": index.manifest.images, "generation": index.generation,
                "encoder": None if encoder is None else {"model": encoder.get("model"),
                                                         "pretrained": encoder.get("pretrained")},
                "text_search": clip, "listing_check": clip, "max_upload_mb": service.options.max_upload_mb,
                "max_k": service.options.max_k, "version": __version__}

    @app.get("/v1/pins/{pin_id:path}/images/{number}", tags=["catalogue"], summary="A reference image, as JPEG",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def pin_image(pin_id: str, number: int,
                        size: int = Query(384, description=f"longest side, one of {THUMBNAIL_SIDES}")) -> Response:
        """Image `number` (from 0) of the pin, from the index's own image table, at most `size` px."""
        if size not in THUMBNAIL_SIDES:
            raise ApiError(422, "invalid_request", f"size must be one of {', '.join(map(str, THUMBNAIL_SIDES))}")
        data = await service.run(service.thumbnail, pin_id, number, size)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=60"})

    @app.get("/v1/pins/{pin_id:path}", tags=["catalogue"], summary="A pin's name, metadata and images")
    async def pin(pin_id: str) -> dict[str, Any]:
        record = service.pin(pin_id)
        return {"pin_id": record.pin_id, "name": record.name, "metadata": record.metadata,
                "images": [{"number": n, "name": path.name,
                            "url": f"/v1/pins/{quote(record.pin_id, safe='')}/images/{n}"}
                           for n, path in enumerate(record.images)]}

    @app.post("/v1/admin/pins", tags=["admin"], dependencies=[Depends(admin)], summary="Add a pin, or images of one")
    async def add_pin(pin_id: str = Form(..., max_length=MAX_PIN_ID_LENGTH), name: str | None = Form(None),
                      metadata: str | None = Form(None, description="a JSON object"),
                      images: list[UploadFile] = File(..., description="its reference images")) -> JSONResponse:
        """As `pinid add`: a new pin, or new images of a known one (its name and metadata stay)."""
        return JSONResponse(await _change(service, "add", pin_id, name, metadata, images))

    @app.put("/v1/admin/pins/{pin_id:path}", tags=["admin"], dependencies=[Depends(admin)],
             summary="Replace a pin's name, metadata and images")
    async def update_pin(pin_id: str, name: str | None = Form(None),
                         metadata: str | None = Form(None, description="a JSON object"),
                         images: list[UploadFile] = File(...)) -> JSONResponse:
        """As `pinid update`: the pin gets exactly these images (added if it is new)."""
        return JSONResponse(await _change(service, "update", pin_id, name, metadata, images))

    @app.delete("/v1/admin/pins/{pin_id:path}", tags=["admin"], dependencies=[Depends(admin)],
                summary="Remove a pin")
    async def remove_pin(pin_id: str) -> JSONResponse:
        service.pin(pin_id)
        return JSONResponse(await service.run(service.remove_pin, pin_id))

    @app.post("/v1/admin/reload", tags=["admin"], dependencies=[Depends(admin)],
              summary="Answer from the newest generation of the index")
    async def reload() -> JSONResponse:
        """After `pinid add/update/remove/calibrate` changed the index on disk; in-flight requests finish on
        the generation they started with."""
        return JSONResponse(await service.run(service.reload))

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The index is loaded and requests are taken")
    async def readyz() -> JSONResponse:
        if not service.ready:
            return _error(503, "shutting_down", "the server is shutting down")
        return JSONResponse({"ready": True, "generation": service.index.generation, "pins": len(service.index)})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        pool = service.pool
        gauges = {"pinid_queue_depth": ("Requests waiting for a worker.", pool.queued),
                  "pinid_workers_busy": ("Workers identifying now.", pool.running),
                  "pinid_workers": ("Worker threads.", pool.workers),
                  "pinid_index_generation": ("Generation of the index answering.", service.index.generation),
                  "pinid_index_pins": ("Pins in the index.", len(service.index))}
        return PlainTextResponse(service.metrics.render(gauges, resident_bytes),
                                 media_type="text/plain; version=0.0.4")


async def _change(service: _Service, action: Literal["add", "update"], pin_id: str, name: str | None,
                  metadata: str | None, images: list[UploadFile]) -> dict[str, Any]:
    if not pin_id.strip() or has_control_characters(pin_id) or len(pin_id) > MAX_PIN_ID_LENGTH:
        raise ApiError(422, "invalid_request", "pin_id must be 1 to 200 printable characters")
    try:
        parsed = json.loads(metadata) if metadata else {}
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"metadata is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise ApiError(422, "invalid_request", "metadata must be a JSON object")
    uploads = [(_upload_name(upload), await upload.read()) for upload in images]
    return await service.run(service.change_pin, action, pin_id, name, parsed, uploads)


#: The page loads only its own files, talks only to this server, and runs no inline script.
_PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
