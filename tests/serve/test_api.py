"""The HTTP API in process (Starlette's TestClient): every endpoint, and every error the issue names."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("fastapi_offline")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from pinid import PinIndex, read_catalogue  # noqa: E402
from pinid.serve import ServeOptions, create_app  # noqa: E402
from pinid.serve.uploads import BodyLimit  # noqa: E402
from pinid.serve.work import Busy, WorkPool  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "examples" / "photo.jpg"
TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve") / "catalogue"
    shutil.copytree(ROOT / "examples" / "catalogue", folder)
    return folder


@pytest.fixture(scope="module")
def local_index(catalogue_dir: Path) -> Path:
    path = catalogue_dir.parent / "local-index"
    PinIndex.build(read_catalogue(catalogue_dir), path, None)
    return path


@pytest.fixture(scope="module")
def clip_index(catalogue_dir: Path, tiny_encoder: Any) -> Path:
    path = catalogue_dir.parent / "clip-index"
    PinIndex.build(read_catalogue(catalogue_dir), path, tiny_encoder)
    return path


def client_for(index_dir: Path, **options: Any) -> TestClient:
    app = create_app(PinIndex.load(index_dir), ServeOptions(**options))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(local_index: Path) -> Iterator[TestClient]:
    with client_for(local_index) as test_client:
        yield test_client


def upload(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg") -> dict[str, Any]:
    return {"image": (name, data, content_type)}


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def assert_json_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code and body["message"], body
    assert "Traceback" not in response.text
    return body


# ------------------------------------------------------------------ identify
def test_identify_names_the_pin_with_its_outline_and_reference_link(client: TestClient) -> None:
    response = client.post("/v1/identify?k=3", files=upload(PHOTO.read_bytes()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "photo.jpg" and body["error"] is None and body["unknown"] is False
    assert body["confidence"] > 0.9 and body["image_size"] == list(Image.open(PHOTO).size)
    first = body["matches"][0]
    assert [m["rank"] for m in body["matches"]] == [1, 2, 3]
    assert first["pin_id"] == "heart-gold" and first["name"] == "Red Heart" and first["metadata"] == {"metal": "gold"}
    assert len(first["polygon"]) == 4 and first["inliers"] > 0
    assert first["reference_image"] == "front.png"  # the file name only: no path of the server's disk
    assert first["reference_image_url"] == "/v1/pins/heart-gold/images/0"
    thumbnail = client.get(first["reference_image_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 384


def test_identify_answers_as_the_python_api_does(client: TestClient, local_index: Path) -> None:
    expected = PinIndex.load(local_index).identify(PHOTO, k=5).to_dict()
    body = client.post("/v1/identify", files=upload(PHOTO.read_bytes())).json()
    assert [m["pin_id"] for m in body["matches"]] == [m["pin_id"] for m in expected["matches"]]
    assert body["confidence"] == expected["confidence"]
    assert [m["score"] for m in body["matches"]] == [m["score"] for m in expected["matches"]]


def test_identify_multi_outlines_every_pin_on_a_board(client: TestClient, catalogue_dir: Path) -> None:
    board = Image.new("RGB", (900, 420), (70, 90, 110))
    for x, pin in zip((20, 320, 620), ("heart-gold", "wave-silver", "leaf-silver")):
        art = Image.open(catalogue_dir / pin / "front.png").convert("RGB").resize((260, 260))
        board.paste(art.rotate(8, expand=False, fillcolor=(70, 90, 110)), (x, 80))
    response = client.post("/v1/identify?multi=true", files=upload(png_bytes(board), "board.png", "image/png"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image_size"] == [900, 420]
    found = {pin["pin_id"]: pin for pin in body["pins"]}
    assert {"heart-gold", "wave-silver", "leaf-silver"} <= set(found)
    for pin in found.values():
        assert len(pin["polygon"]) == 4 and 0 < pin["confidence"] <= 1 and pin["reference_image_url"]


@pytest.mark.parametrize("query", ["k=0", "k=51", "k=two", "multi=maybe"])
def test_bad_parameters_are_422_with_a_message(client: TestClient, query: str) -> None:
    body = assert_json_error(client.post(f"/v1/identify?{query}", files=upload(PHOTO.read_bytes())), 422,
                             "invalid_request")
    assert query.split("=")[0] in body["message"]


def test_a_request_without_an_image_is_422(client: TestClient) -> None:
    assert_json_error(client.post("/v1/identify", data={"k": "3"}), 422, "invalid_request")


# -------------------------------------------------------------- bad uploads
def test_upload_over_the_limit_is_413_before_it_is_read(local_index: Path) -> None:
    with client_for(local_index, max_upload_mb=0.2) as small:
        response = small.post("/v1/identify", files=upload(b"\xff" * 400_000))
        assert_json_error(response, 413, "payload_too_large")
        assert "0.2 MB" in response.json()["message"]
        assert small.post("/v1/identify", files=upload(PHOTO.read_bytes())).status_code == 200  # 45 kB passes


def test_body_limit_counts_a_stream_without_content_length() -> None:
    """A chunked upload that declares no size is cut off once it passes the limit, and never reaches the app."""
    reached: list[bytes] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            reached.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunks = [{"type": "http.request", "body": b"x" * 1000, "more_body": True} for _ in range(50)]
    sent: list[dict] = []

    async def receive() -> dict:
        return chunks.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodyLimit(app, limit=10_000)({"type": "http", "headers": []}, receive, send))
    assert sent[0]["status"] == 413 and sum(map(len, reached)) <= 11_000 and len(chunks) >= 38


@pytest.mark.parametrize("data, name", [
    (b"this is not an image at all", "notes.jpg"),
    (b"", "empty.jpg"),
    (PHOTO.read_bytes()[:2000], "truncated.jpg"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj", "doc.png"),
])
def test_not_an_image_is_415(client: TestClient, data: bytes, name: str) -> None:
    body = assert_json_error(client.post("/v1/identify", files=upload(data, name)), 415, "not_an_image")
    assert name in body["message"]


def test_decompression_bomb_is_413(client: TestClient) -> None:
    bomb = png_bytes(Image.new("1", (20_000, 10_000)))  # 200 megapixels in a few kB: Pillow refuses to open it
    assert len(bomb) < 100_000
    assert_json_error(client.post("/v1/identify", files=upload(bomb, "bomb.png", "image/png")), 413, "too_many_pixels")


def test_too_many_pixels_for_the_server_is_413_before_decoding(local_index: Path) -> None:
    large = png_bytes(Image.new("L", (2000, 1000)))
    with client_for(local_index, max_pixels=1_000_000) as strict:
        body = assert_json_error(strict.post("/v1/identify", files=upload(large, "big.png")), 413, "too_many_pixels")
        assert "2000x1000" in body["message"]


def test_odd_image_modes_are_answered(client: TestClient) -> None:
    photo = Image.open(PHOTO)
    for image in (photo.convert("L"), photo.convert("P"), photo.convert("RGBA"), photo.convert("CMYK")):
        out = io.BytesIO()
        image.save(out, "TIFF" if image.mode == "CMYK" else "PNG")
        response = client.post("/v1/identify", files=upload(out.getvalue(), f"photo-{image.mode}.img"))
        assert response.status_code == 200, (image.mode, response.text)
        assert response.json()["matches"]


def test_an_internal_error_is_json_without_a_traceback(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    service = client.app.state.pinid

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /srv/pins/private.sqlite")

    monkeypatch.setattr(service.index, "identify_many", broken)
    response = client.post("/v1/identify", files=upload(PHOTO.read_bytes()))
    body = assert_json_error(response, 500, "internal_error")
    assert "secret" not in response.text and "private.sqlite" not in body["message"]


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    assert_json_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_json_error(client.get("/v1/identify"), 405, "method_not_allowed")


# ------------------------------------------------------------- busy: 503
def test_a_full_pool_answers_503_with_retry_after(local_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with client_for(local_index, workers=1, queue=0) as busy_client:
        service = busy_client.app.state.pinid
        release, started = threading.Event(), threading.Event()
        real = service.identify

        def slow(*args: Any) -> Any:
            started.set()
            release.wait(30)
            return real(*args)

        monkeypatch.setattr(service, "identify", slow)
        first: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: first.update(
            response=busy_client.post("/v1/identify", files=upload(PHOTO.read_bytes()))))
        worker.start()
        assert started.wait(30)
        refused = busy_client.post("/v1/identify", files=upload(PHOTO.read_bytes()))
        assert_json_error(refused, 503, "busy")
        assert refused.headers["retry-after"] == "1"
        release.set()
        worker.join(30)
        assert first["response"].status_code == 200
        metrics = busy_client.get("/metrics").text
        assert "pinid_rejected_busy_total 1" in metrics
        assert 'pinid_requests_total{route="/v1/identify",method="POST",status="503"} 1' in metrics


def test_work_pool_bounds_admitted_work_and_frees_slots_when_work_ends() -> None:
    pool = WorkPool(workers=1, queue=1)
    gate = threading.Event()

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(pool.run(gate.wait, 10))
        second = asyncio.ensure_future(pool.run(lambda: "queued"))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            await pool.run(lambda: "third")
        assert pool.running == 1 and pool.queued == 1
        first.cancel()  # the client went away: its work still holds its slot until it ends
        with pytest.raises(Busy):
            await pool.run(lambda: "fourth")
        gate.set()
        result = await second
        await asyncio.sleep(0.05)
        return [result, await pool.run(lambda: "after")]

    assert asyncio.run(scenario()) == ["queued", "after"]
    assert pool.running == 0 and pool.queued == 0
    pool.shutdown()


# --------------------------------------------------------- pins and images
def test_pin_metadata_and_reference_images(client: TestClient) -> None:
    body = client.get("/v1/pins/heart-gold").json()
    assert body == {"pin_id": "heart-gold", "name": "Red Heart", "metadata": {"metal": "gold"},
                    "images": [{"number": 0, "name": "front.png", "url": "/v1/pins/heart-gold/images/0"}]}
    large = client.get("/v1/pins/heart-gold/images/0?size=64")
    assert large.status_code == 200 and max(Image.open(io.BytesIO(large.content)).size) == 64
    assert_json_error(client.get("/v1/pins/no-such-pin"), 404, "unknown_pin")
    assert_json_error(client.get("/v1/pins/heart-gold/images/1"), 404, "unknown_image")
    assert_json_error(client.get("/v1/pins/heart-gold/images/-1"), 404, "unknown_image")
    assert_json_error(client.get("/v1/pins/heart-gold/images/0?size=5000"), 422, "invalid_request")


@pytest.mark.parametrize("path", ["/v1/pins/..%2F..%2F..%2Fetc%2Fpasswd/images/0", "/v1/pins/%2Fetc%2Fpasswd",
                                  "/v1/pins/../../etc/passwd", "/v1/pins/heart-gold/images/..%2F..%2Fpin.json"])
def test_no_path_parameter_reaches_the_file_system(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (404, 422), response.text
    assert "root:" not in response.text and "Red Heart" not in response.text


def test_a_moved_reference_image_is_404_not_a_crash(local_index: Path, catalogue_dir: Path) -> None:
    moved = catalogue_dir / "sun-gold" / "front.png"
    kept = moved.read_bytes()
    moved.unlink()
    try:
        with client_for(local_index) as fresh:
            assert_json_error(fresh.get("/v1/pins/sun-gold/images/0"), 404, "image_unavailable")
    finally:
        moved.write_bytes(kept)


def test_pin_ids_with_slashes_and_spaces_round_trip(tmp_path: Path) -> None:
    art = ROOT / "examples" / "catalogue" / "heart-gold" / "front.png"
    shutil.copy(art, tmp_path / "a.png")
    (tmp_path / "pins.csv").write_text("id,name,image\nseries 1/heart #2,Heart <two>,a.png\n", encoding="utf-8")
    PinIndex.build(read_catalogue(tmp_path / "pins.csv"), tmp_path / "index", None)
    with client_for(tmp_path / "index") as odd:
        url = odd.post("/v1/identify", files=upload(PHOTO.read_bytes())).json()["matches"][0]["pin_url"]
        assert url == "/v1/pins/series%201%2Fheart%20%232"
        body = odd.get(url).json()
        assert body["pin_id"] == "series 1/heart #2" and body["name"] == "Heart <two>"
        assert odd.get(body["images"][0]["url"]).status_code == 200


# -------------------------------------------------- search and listings
def test_text_search_needs_clip(client: TestClient, clip_index: Path) -> None:
    assert_json_error(client.get("/v1/search?q=red heart"), 409, "not_supported_by_index")
    assert client.get("/v1/index").json()["text_search"] is False
    with client_for(clip_index) as clip:
        assert clip.get("/v1/index").json()["text_search"] is True
        body = clip.get("/v1/search?q=red heart&k=2").json()
        assert body["query"] == "red heart" and len(body["matches"]) == 2
        expected = PinIndex.load(clip_index).search_text("red heart", k=2)
        assert [m["pin_id"] for m in body["matches"]] == [m.pin_id for m in expected]
        assert all(m["similarity"] is not None and m["reference_image_url"] for m in body["matches"])
        assert_json_error(clip.get("/v1/search?q="), 422, "invalid_request")


def test_listing_check_says_duplicate_or_new(client: TestClient, clip_index: Path, catalogue_dir: Path) -> None:
    assert_json_error(client.post("/v1/listings/check", files=upload(PHOTO.read_bytes())), 409,
                      "not_supported_by_index")
    reference = (catalogue_dir / "wave-silver" / "front.png").read_bytes()
    with client_for(clip_index) as clip:
        same = clip.post("/v1/listings/check?listing_id=L-1", files=upload(reference, "copy.png", "image/png")).json()
        assert same["listing_id"] == "L-1" and same["status"] == "duplicate" and same["reason"] == "exact_file"
        assert same["match_pin_id"] == "wave-silver" and same["match_image"] == "front.png"
        assert same["match_image_url"] == "/v1/pins/wave-silver/images/0"
        other = clip.post("/v1/listings/check?mode=pin", files=upload(PHOTO.read_bytes())).json()
        assert other["status"] in ("new", "duplicate") and other["reason"] != "exact_file"
        assert_json_error(clip.post("/v1/listings/check", files=upload(b"nope", "x.jpg")), 415, "not_an_image")
        assert_json_error(clip.post("/v1/listings/check?mode=colour", files=upload(reference)), 422,
                          "invalid_request")


# ------------------------------------------------------------------ admin
def test_admin_routes_need_the_token(client: TestClient, local_index: Path) -> None:
    for method, path in (("post", "/v1/admin/reload"), ("delete", "/v1/admin/pins/heart-gold")):
        body = assert_json_error(getattr(client, method)(path), 401, "unauthorized")
        assert "--admin-token-file" in body["message"]
    with client_for(local_index, admin_token=TOKEN) as guarded:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN}):
            assert_json_error(guarded.post("/v1/admin/reload", headers=headers), 401, "unauthorized")
        assert guarded.get("/v1/pins/heart-gold").status_code == 200  # the rest stays open


def test_admin_adds_updates_and_removes_pins(tmp_path: Path, catalogue_dir: Path) -> None:
    index_dir = tmp_path / "index"
    PinIndex.build(read_catalogue(catalogue_dir), index_dir, None)
    uploads = tmp_path / "uploads"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    art = (catalogue_dir / "heart-gold" / "front.png").read_bytes()
    heart = Image.open(io.BytesIO(art)).convert("RGB")
    mirrored = png_bytes(heart.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    with client_for(index_dir, admin_token=TOKEN, uploads_dir=uploads) as admin:
        added = admin.post("/v1/admin/pins", headers=auth, data={"pin_id": "mirror-heart", "name": "Mirror <Heart>",
                                                                 "metadata": json.dumps({"year": 2026})},
                           files=[("images", ("../../../escape.png", mirrored, "image/png"))])
        assert added.status_code == 200, added.text
        assert added.json()["pins_added"] == ["mirror-heart"] and added.json()["generation"] == 2
        stored = list(uploads.iterdir())
        assert len(stored) == 1 and stored[0].suffix == ".png" and len(stored[0].stem) == 64  # by content hash
        assert not (tmp_path.parent / "escape.png").exists()
        pin = admin.get("/v1/pins/mirror-heart").json()
        assert pin["name"] == "Mirror <Heart>" and pin["metadata"] == {"year": 2026}
        assert admin.get(pin["images"][0]["url"]).status_code == 200
        assert admin.get("/readyz").json()["generation"] == 2

        updated = admin.put("/v1/admin/pins/mirror-heart", headers=auth, data={"name": "Mirrored heart"},
                            files=[("images", ("a.png", mirrored, "image/png"))])
        assert updated.status_code == 200, updated.text
        assert admin.get("/v1/pins/mirror-heart").json()["name"] == "Mirrored heart"

        bad = admin.post("/v1/admin/pins", headers=auth, data={"pin_id": "x", "metadata": "[1, 2]"},
                         files=[("images", ("a.png", art, "image/png"))])
        assert_json_error(bad, 422, "invalid_request")
        junk = admin.post("/v1/admin/pins", headers=auth, data={"pin_id": "junk"},
                          files=[("images", ("a.png", b"not an image", "image/png"))])
        assert_json_error(junk, 415, "not_an_image")
        assert admin.get("/v1/pins/junk").status_code == 404

        removed = admin.delete("/v1/admin/pins/mirror-heart", headers=auth)
        assert removed.status_code == 200 and removed.json()["pins_removed"] == ["mirror-heart"]
        assert_json_error(admin.get("/v1/pins/mirror-heart"), 404, "unknown_pin")
        assert_json_error(admin.delete("/v1/admin/pins/mirror-heart", headers=auth), 404, "unknown_pin")


def test_admin_reload_moves_to_a_change_made_on_disk(tmp_path: Path, catalogue_dir: Path) -> None:
    index_dir = tmp_path / "index"
    PinIndex.build(read_catalogue(catalogue_dir), index_dir, None)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client_for(index_dir, admin_token=TOKEN) as admin:
        assert admin.post("/v1/admin/reload", headers=auth).json() == {"reloaded": False, "generation": 1, "pins": 5}
        PinIndex.load(index_dir).remove(["sun-gold"])  # `pinid remove` from another process, in effect
        assert admin.get("/v1/pins/sun-gold").status_code == 200  # still answering from generation 1
        assert admin.post("/v1/admin/reload", headers=auth).json() == {"reloaded": True, "generation": 2, "pins": 4}
        assert admin.get("/v1/pins/sun-gold").status_code == 404
        ids = [m["pin_id"] for m in admin.post("/v1/identify?k=5", files=upload(PHOTO.read_bytes())).json()["matches"]]
        assert "sun-gold" not in ids and ids[0] == "heart-gold"
        no_uploads = admin.post("/v1/admin/pins", headers=auth, data={"pin_id": "new"},
                                files=[("images", ("a.png", PHOTO.read_bytes(), "image/jpeg"))])
        assert_json_error(no_uploads, 409, "no_uploads_dir")


# ------------------------------------------------------------ operations
def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "generation": 1, "pins": 5}
    client.post("/v1/identify", files=upload(PHOTO.read_bytes()))
    client.get("/v1/pins/nope")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert 'pinid_requests_total{route="/v1/identify",method="POST",status="200"} 1' in text
    assert 'pinid_requests_total{route="/v1/pins/{pin_id:path}",method="GET",status="404"} 1' in text
    assert 'pinid_request_duration_seconds_bucket{route="/v1/identify",le="+Inf"} 1' in text
    assert 'pinid_request_duration_seconds_count{route="/v1/identify"} 1' in text
    for gauge in ("pinid_queue_depth 0", "pinid_workers_busy 0", "pinid_workers 2", "pinid_index_generation 1"):
        assert gauge in text
    assert "process_resident_memory_bytes " in text


def test_metrics_do_not_grow_with_client_chosen_paths(client: TestClient) -> None:
    for n in range(20):
        client.get(f"/v1/pins/random-{n}")
        client.get(f"/nowhere/{n}")
    text = client.get("/metrics").text
    assert "random-" not in text and "nowhere" not in text
    assert 'route="unmatched",method="GET",status="404"} 20' in text


def test_cors_is_off_unless_configured(client: TestClient, local_index: Path) -> None:
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/identify", headers=preflight).headers
    assert "access-control-allow-origin" not in client.get("/v1/index", headers={"Origin": "https://x.example"}).headers
    with client_for(local_index, cors_origins=("https://shop.example",)) as open_client:
        response = open_client.options("/v1/identify", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://shop.example"
        other = open_client.get("/v1/index", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_docs_work_offline_and_list_every_endpoint(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower() and "//" not in docs.text.split("<body")[1]
    for asset in ("/static-offline-docs/swagger-ui-bundle.js", "/static-offline-docs/swagger-ui.css"):
        assert client.get(asset).status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/identify", "/v1/listings/check", "/v1/search", "/v1/index", "/v1/pins/{pin_id}",
                 "/v1/pins/{pin_id}/images/{number}", "/v1/admin/pins", "/v1/admin/pins/{pin_id}",
                 "/v1/admin/reload", "/healthz", "/readyz", "/metrics"):
        assert path in paths, path


def test_the_page_is_served_with_a_strict_content_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another host: works offline
