"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The server is started as a user starts it (``pinid serve -i INDEX --port 0``)
on a copy of the example catalogue in which one pin is named like markup; the
page must show that name as text. Screenshots go to ``$PINID_ARTEFACTS`` (CI
keeps them) or the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, NoReturn

import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_PIN = "leaf-silver"
XSS_NOTE = "<b>bold</b> & co"
#: Board photo: (pin id, where its top-left corner goes, rotation in degrees), on a 1200 x 800 canvas.
BOARD = (("heart-gold", (60, 120), -12), ("sun-gold", (440, 330), 8), ("cat-black", (820, 90), 15))
BOARD_PIN_SIDE = 300
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 30_000


def _missing(reason: str) -> NoReturn:
    """Skip where the browser stack is absent, but fail in CI, which installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: a missing browser must not pass as a skip)")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get("PINID_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        _missing("no Chromium: install Debian's chromium package or set PINID_CHROMIUM")
    return str(path)


def _pinid_command() -> list[str]:
    """The ``pinid`` console script of this Python (as a user types it)."""
    script = Path(sys.executable).parent / "pinid"
    if script.exists():
        return [str(script)]
    found = shutil.which("pinid")
    if found:
        return [found]
    pytest.fail(f"no pinid console script next to {sys.executable} or on PATH (pip install -e '.[dev]')")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Python playwright is not installed (pip install playwright; its bundled browsers are not needed)")
    chromium = _chromium()
    with sync_playwright() as api:
        browser = api.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example catalogue, one pin renamed to markup, indexed with ``--encoder local`` by the CLI."""
    root = tmp_path_factory.mktemp("browser")
    catalogue = root / "catalogue"
    shutil.copytree(EXAMPLES / "catalogue", catalogue)
    (catalogue / XSS_PIN / "pin.json").write_text(json.dumps({"name": XSS_NAME, "metal": "silver",
                                                               "note": XSS_NOTE}), encoding="utf-8")
    output = root / "index"
    subprocess.run([*_pinid_command(), "build-index", str(catalogue), "-o", str(output), "--encoder", "local", "-q"],
                   check=True, capture_output=True, timeout=300)
    return output


@pytest.fixture(scope="module")
def server(index_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``pinid serve -i INDEX --port 0``; its URL, read from the first line it writes to stderr."""
    logs = tmp_path_factory.mktemp("server")
    stderr_path, stdout_path = logs / "stderr.txt", logs / "stdout.txt"
    with open(stderr_path, "wb") as stderr, open(stdout_path, "wb") as stdout:
        process = subprocess.Popen([*_pinid_command(), "serve", "-i", str(index_dir), "--port", "0"],
                                   stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        url = _wait_for_url(process, stderr_path, deadline=time.monotonic() + 120)
        _wait_ready(process, url, stderr_path, deadline=time.monotonic() + 60)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"pinid serve did not exit within 10 s of SIGTERM; its log:\n{_tail(stderr_path)}")


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-4000:]


def _wait_for_url(process: subprocess.Popen[bytes], stderr_path: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        lines = stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines:
            found = re.search(r"on (http://127\.0\.0\.1:\d+/)", lines[0])
            assert found, f"pinid serve's first stderr line names no URL: {lines[0]!r}"
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"pinid serve exited ({process.returncode}) before serving:\n{_tail(stderr_path)}")
        time.sleep(0.05)
    pytest.fail(f"pinid serve printed no URL in time:\n{_tail(stderr_path)}")


def _wait_ready(process: subprocess.Popen[bytes], url: str, stderr_path: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if process.poll() is not None:
            pytest.fail(f"pinid serve exited ({process.returncode}):\n{_tail(stderr_path)}")
        time.sleep(0.1)
    pytest.fail(f"{url}readyz never answered 200:\n{_tail(stderr_path)}")


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$PINID_ARTEFACTS`` (kept by CI) or a temporary folder."""
    folder = os.environ.get("PINID_ARTEFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Watched:
    """A page plus what it must never do: open a dialog, throw, or break its Content-Security-Policy."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.csp: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.csp.append(message.text)

    def check_clean(self) -> None:
        assert self.dialogs == [], f"the page opened dialogs: {self.dialogs}"
        assert self.errors == [], f"script errors on the page: {self.errors}"
        assert self.csp == [], f"the page broke its Content-Security-Policy: {self.csp}"


@pytest.fixture
def open_page(browser: Any, server: str) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_(width: int = 1280, height: int = 900, mobile: bool = False) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=mobile,
                                             has_touch=mobile, device_scale_factor=2 if mobile else 1,
                                             color_scheme="light", reduced_motion="reduce")
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        watched = Watched(context.new_page())
        response = watched.page.goto(server)
        assert response is not None and response.ok
        watched.page.locator("#catalogue-info").filter(has_text="5 pins").wait_for()
        return watched

    yield open_
    for context in contexts:
        context.close()


# ------------------------------------------------------------------ helpers
def _upload(page: Any, path: Path) -> None:
    page.get_by_label("choose a photo").set_input_files(str(path))


def _points(polygon: Any) -> list[tuple[float, float]]:
    text = polygon.get_attribute("points") or ""
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in text.split())]


def _view_box(page: Any) -> tuple[float, float]:
    box = page.locator("#overlay").get_attribute("viewBox")
    assert box, "the overlay has no viewBox"
    _, _, width, height = (float(v) for v in box.split())
    return width, height


def _inside(points: list[tuple[float, float]], width: float, height: float, slack: float = 0.02) -> bool:
    """Within the photo, give or take ``slack`` of its sides (a fitted corner may sit a pixel or two outside)."""
    return all(-slack * width <= x <= (1 + slack) * width and -slack * height <= y <= (1 + slack) * height
               for x, y in points)


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def _make_board(path: Path) -> dict[str, tuple[float, float]]:
    """Catalogue pins pasted at small angles on a textured blue canvas; their centres, by pin id."""
    canvas = Image.new("RGB", (1200, 800), (58, 84, 130))
    draw = ImageDraw.Draw(canvas)
    for i in range(4000):  # a little texture, deterministic
        x, y, shade = (i * 7919) % 1200, (i * 104_729) % 800, (i * 31) % 24 - 12
        draw.point((x, y), fill=(58 + shade, 84 + shade, 130 + shade))
    centres = {}
    for pin, (x, y), angle in BOARD:
        with Image.open(EXAMPLES / "catalogue" / pin / "front.png") as source:
            art = source.convert("RGBA").resize((BOARD_PIN_SIDE, BOARD_PIN_SIDE))
        mask = Image.new("L", art.size, 0)
        ImageDraw.Draw(mask).ellipse((2, 2, BOARD_PIN_SIDE - 3, BOARD_PIN_SIDE - 3), fill=255)
        art.putalpha(mask)
        art = art.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        canvas.paste(art, (x, y), art)
        centres[pin] = (x + art.width / 2, y + art.height / 2)
    canvas.save(path, quality=92)
    return centres


# -------------------------------------------------------------------- tests
def test_single_photo_answer_outline_and_markup_named_pin_as_text(open_page: Any, artefacts: Path) -> None:
    watched = open_page()
    page = watched.page
    assert page.locator("#search").is_hidden(), "a local-features index has no text search: the box is hidden"
    _upload(page, EXAMPLES / "photo.jpg")

    answer = page.locator("#answer .answer-card.known")
    answer.wait_for()
    assert answer.locator(".answer-name").text_content() == "Red Heart"
    assert "%" in (answer.locator(".confidence-text").text_content() or "")
    assert page.locator("#status").text_content() == "", "the busy indicator is gone once answered"

    outlines = page.locator("#overlay polygon.outline")
    assert outlines.count() == 1
    points = _points(outlines.first)
    width, height = _view_box(page)
    assert (width, height) == (640, 480)
    assert len(points) == 4 and _inside(points, width, height), points
    # the overlay covers exactly the photo as shown, so the outline lands on the pin
    photo_box, overlay_box = page.locator("#photo").bounding_box(), page.locator("#overlay").bounding_box()
    assert photo_box and overlay_box and photo_box["width"] > 100
    for key in ("x", "y", "width", "height"):
        assert abs(photo_box[key] - overlay_box[key]) < 1.5, (photo_box, overlay_box)

    candidates = page.locator("#candidates > li")
    assert candidates.count() == 5
    names = candidates.locator(".name").all_text_contents()
    assert names[0] == "Red Heart" and XSS_NAME in names
    assert page.get_by_text(XSS_NAME, exact=True).count() >= 1
    assert page.locator('img[src="x"]').count() == 0
    assert page.locator("#candidates b").count() == 0
    assert XSS_NOTE in (page.locator(f'#candidates li[data-pin-id="{XSS_PIN}"] .meta').text_content() or "")
    assert candidates.locator("img.thumb").count() == 5
    page.wait_for_function("() => [...document.querySelectorAll('#candidates img.thumb')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")  # every reference thumbnail
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artefacts / "browser-single.png"), full_page=True)
    watched.check_clean()


def test_single_answer_on_a_phone(open_page: Any, artefacts: Path) -> None:
    watched = open_page(390, 844, mobile=True)
    page = watched.page
    _upload(page, EXAMPLES / "photo.jpg")
    page.locator("#answer .answer-card.known").wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('#answer img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    photo, answer = page.locator("#frame").bounding_box(), page.locator("#answer").bounding_box()
    assert photo and answer
    assert answer["y"] + answer["height"] <= photo["y"] + 1, "one column on a phone: the answer, then the photo"
    assert answer["width"] > 300 and photo["width"] > 300
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "nothing wider than the phone"
    page.wait_for_function("() => { const box = document.getElementById('answer').getBoundingClientRect();"
                           " return box.top >= 0 && box.bottom <= window.innerHeight; }")  # in view, unscrolled
    page.screenshot(path=str(artefacts / "browser-mobile.png"))
    watched.check_clean()


def test_outline_follows_exif_rotation(open_page: Any, tmp_path: Path) -> None:
    """A phone photo stored sideways with an EXIF orientation: page and server both show it upright."""
    sideways = tmp_path / "sideways.jpg"
    with Image.open(EXAMPLES / "photo.jpg") as photo:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        photo.transpose(Image.Transpose.ROTATE_90).save(sideways, exif=exif.tobytes(), quality=92)
    watched = open_page()
    page = watched.page
    _upload(page, sideways)
    page.locator("#answer .answer-card.known").wait_for()
    assert page.locator("#answer .answer-name").text_content() == "Red Heart"
    assert _view_box(page) == (640, 480)
    page.wait_for_function("() => document.getElementById('photo').naturalWidth > 0")
    assert page.evaluate("[document.getElementById('photo').naturalWidth, document.getElementById('photo').naturalHeight]") == [640, 480]
    photo_box, overlay_box = page.locator("#photo").bounding_box(), page.locator("#overlay").bounding_box()
    assert photo_box and overlay_box and abs(photo_box["height"] / photo_box["width"] - 0.75) < 0.01
    assert all(abs(photo_box[key] - overlay_box[key]) < 1.5 for key in ("x", "y", "width", "height"))
    watched.check_clean()


def test_a_pin_not_in_the_catalogue_is_unknown(open_page: Any, artefacts: Path, tmp_path: Path) -> None:
    photo = tmp_path / "stranger.jpg"
    image = Image.new("RGB", (800, 600), (200, 190, 170))
    draw = ImageDraw.Draw(image)
    draw.ellipse((250, 150, 550, 450), fill=(40, 90, 200), outline=(180, 180, 190), width=14)
    draw.polygon([(400, 200), (440, 330), (360, 330)], fill=(250, 250, 250))
    image.save(photo, quality=92)
    watched = open_page()
    page = watched.page
    _upload(page, photo)
    answer = page.locator("#answer .answer-card.unknown")
    answer.wait_for()
    assert answer.locator(".answer-name").text_content() == (
        "Unknown pin — not in the catalogue as far as pinid can tell")
    assert page.locator("#candidates-title").text_content() == "Nearest candidates"
    assert page.locator("#candidates > li").count() >= 1
    assert page.locator("#candidates li.best").count() == 0, "no candidate is presented as the answer"
    assert page.locator("#overlay polygon").count() == 0
    page.wait_for_function("() => [...document.querySelectorAll('#candidates img.thumb')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    page.screenshot(path=str(artefacts / "browser-unknown.png"), full_page=True)
    watched.check_clean()


def test_board_every_pin_outlined_and_labelled(open_page: Any, artefacts: Path, tmp_path: Path) -> None:
    board = tmp_path / "board.jpg"
    centres = _make_board(board)
    watched = open_page()
    page = watched.page
    page.get_by_label("Find every pin (board)").check()
    _upload(page, board)

    page.locator("#answer .answer-card.board").wait_for()
    assert page.locator("#answer .answer-name").text_content() == f"{len(BOARD)} pins found"
    width, height = _view_box(page)
    assert (width, height) == (1200, 800)
    names = {pin: json.loads((EXAMPLES / "catalogue" / pin / "pin.json").read_text())["name"] for pin, _, _ in BOARD}
    colours = set()
    for pin, (cx, cy) in centres.items():
        outline = page.locator(f'#overlay polygon.outline[data-pin-id="{pin}"]')
        assert outline.count() == 1, f"{pin} is not outlined"
        points = _points(outline)
        assert len(points) == 4 and _inside(points, width, height), (pin, points)
        mx, my = sum(x for x, _ in points) / 4, sum(y for _, y in points) / 4
        assert abs(mx - cx) < 80 and abs(my - cy) < 80, f"{pin}'s outline is not on it: {(mx, my)} vs {(cx, cy)}"
        label = page.locator(f'#tags .tag[data-pin-id="{pin}"]')
        assert label.count() == 1 and label.is_visible()
        assert names[pin] in (label.text_content() or "") and "%" in (label.text_content() or "")
        colours.add(outline.evaluate("node => getComputedStyle(node).stroke"))
        listed = page.locator(f'#candidates li[data-pin-id="{pin}"]')
        assert listed.locator(".name").text_content() == names[pin]
    assert len(colours) == len(BOARD), f"each pin in its own colour: {colours}"
    assert page.locator("#candidates-title").text_content() == "Pins on this board"
    assert page.locator("#candidates > li").count() == len(BOARD)
    boxes = [page.locator(f'#tags .tag[data-pin-id="{pin}"]').bounding_box() for pin in centres]
    assert all(boxes) and not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), boxes
    page.screenshot(path=str(artefacts / "browser-board.png"), full_page=True)
    watched.check_clean()


def test_not_an_image_shows_the_api_message(open_page: Any, artefacts: Path, tmp_path: Path) -> None:
    fake = tmp_path / "holiday.jpg"
    fake.write_text("these are not the pixels you are looking for\n", encoding="utf-8")
    watched = open_page()
    page = watched.page
    _upload(page, fake)
    error = page.locator("#error")
    error.wait_for()
    assert "not an image" in (page.locator("#error-message").text_content() or "")
    assert "holiday.jpg" in (page.locator("#error-message").text_content() or "")
    assert page.locator("#error-title").text_content() == "That file is not a photo pinid can read"
    assert page.locator("#result").is_hidden()
    assert page.locator("#status").text_content() == ""
    page.screenshot(path=str(artefacts / "browser-error.png"), full_page=True)
    watched.check_clean()

    # a good photo afterwards clears the error
    _upload(page, EXAMPLES / "photo.jpg")
    page.locator("#answer .answer-card.known").wait_for()
    assert error.is_hidden()


def test_busy_server_message_and_retry(open_page: Any) -> None:
    """A 503 (pool full) shows the API's message with a retry button, which then gets the answer."""
    watched = open_page()
    page = watched.page
    busy = {"error": "busy", "message": "all 2 workers are busy and the queue is full; retry in 1 s"}
    page.route("**/v1/identify?*", lambda route: route.fulfill(status=503, json=busy, headers={"Retry-After": "1"}))
    _upload(page, EXAMPLES / "photo.jpg")
    page.locator("#error").wait_for()
    assert page.locator("#error-title").text_content() == "pinid is busy"
    assert busy["message"] in (page.locator("#error-message").text_content() or "")
    page.unroute("**/v1/identify?*")
    page.get_by_role("button", name="Try again").click()
    page.locator("#answer .answer-card.known").wait_for()
    assert page.locator("#answer .answer-name").text_content() == "Red Heart"
    assert page.locator("#error").is_hidden()
    watched.check_clean()


def test_text_search_box_lists_results_as_text(open_page: Any, artefacts: Path) -> None:
    """With an index that has CLIP vectors the page shows the search box (answers stubbed: no model here)."""
    watched = open_page()
    page = watched.page
    real = json.loads(page.evaluate("fetch('/v1/index').then(r => r.text())"))
    match = {"rank": 1, "pin_id": XSS_PIN, "name": XSS_NAME, "score": 0.31, "similarity": 0.31, "probability": None,
             "metadata": {"note": XSS_NOTE}, "reference_image": "front.png",
             "reference_image_url": f"/v1/pins/{XSS_PIN}/images/0", "pin_url": f"/v1/pins/{XSS_PIN}"}
    page.route("**/v1/index", lambda route: route.fulfill(json={**real, "text_search": True}))
    page.route("**/v1/search?*", lambda route: route.fulfill(json={"query": "green leaf", "matches": [match]}))
    page.reload()
    page.get_by_label("Search the catalogue by description").fill("green leaf")
    page.get_by_role("button", name="Search").click()
    result = page.locator("#search-results li")
    result.first.wait_for()
    assert result.count() == 1
    assert result.locator(".name").text_content() == XSS_NAME
    assert "1 pin" in (page.locator("#search-status").text_content() or "")
    assert page.locator('img[src="x"]').count() == 0
    page.wait_for_function("() => [...document.querySelectorAll('#search-results img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    page.screenshot(path=str(artefacts / "browser-search.png"))
    watched.check_clean()
