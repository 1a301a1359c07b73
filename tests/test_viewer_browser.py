"""The viewer page in a real browser: Debian's Chromium driven by Playwright (PyPI), WebGL on SwiftShader.

Opens the bundled CT, checks the canvas shows the scan, drags a box on the tumour (IJK 206,347 -
229,368 on slice 33, mapped to the screen through NiiVue's own coordinate functions), checks the
mask is drawn, propagates, compares with the reference, saves, and checks the saved file's Dice.

Screenshots go to docs/ when PROMPTSEG_UPDATE_SCREENSHOTS=1 (else to a temporary folder).
Skipped, saying why, where Chromium or Playwright is missing; CI installs both (.ci/run).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import promptseg
from datafiles import REPO, image, label

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]
TOKEN = "browser-test-token"
BOX = (206, 347, 229, 368)
SLICE = 33

pytestmark = pytest.mark.slow


def _require_browser():
    pytest.importorskip("playwright.sync_api", reason="Playwright not installed: pip install playwright")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium not installed: apt-get install -y chromium")


class _Server:
    """promptseg serve's app under uvicorn in a thread, on a free local port."""

    def __init__(self, settings):
        import uvicorn

        from promptseg.server import create_app

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def _launch(playwright, tmp_path, extra=(), **options):
    """Chromium with a fresh profile in ``tmp_path`` (a browser context: ``.new_page()``, ``.close()``)."""
    return playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=FLAGS + list(extra), **options)


def _wait(page, expression, timeout=600.0):
    """Poll a JS expression (page.evaluate works under the page's CSP, wait_for_function does not)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        error = page.evaluate("() => document.getElementById('status').classList.contains('error') && document.getElementById('status').textContent")
        assert not error, f"the page reports: {error}"
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def _pixels(page, selector="#gl") -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")).astype(int)


def _pixel_at(page, point) -> np.ndarray:
    box = page.locator("#gl").bounding_box()
    shot = _pixels(page)
    return shot[int(round(point["y"] - box["y"])), int(round(point["x"] - box["x"]))]


def _server_labels(url, session_id, tmp_path) -> np.ndarray:
    """The session's label map as the server holds it, ``(z, y, x)``."""
    import httpx

    path = tmp_path / "server_labels.nii.gz"
    path.write_bytes(httpx.get(f"{url}/api/sessions/{session_id}/labels.nii.gz",
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).content)
    return promptseg.load_volume(path).array


def expected_mask(volume) -> np.ndarray:
    from model_cache import litemedsam

    return promptseg.segment(volume, promptseg.make_object(slice=SLICE, box=BOX), litemedsam()).mask(1)


def _screenshot_dir(tmp_path) -> Path:
    if os.environ.get("PROMPTSEG_UPDATE_SCREENSHOTS") == "1":
        return REPO / "docs"
    return tmp_path


def test_segment_the_bundled_tumour_in_the_browser(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    from model_cache import litemedsam
    from promptseg.server import Settings

    settings = Settings(data_dirs=[image("lung1").parent], token=TOKEN, segmenter_factory=lambda name: litemedsam(),
                        output_dir=tmp_path / "exports")
    shots = _screenshot_dir(tmp_path)
    with _Server(settings) as url, sync_playwright() as playwright:
        browser = _launch(playwright, tmp_path, viewport={"width": 1400, "height": 900}, accept_downloads=True)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/?token={TOKEN}&open={image('lung1').name}")
        _wait(page, "() => !!(window.promptsegViewer && window.promptsegViewer.ready && window.promptsegViewer.grid)")
        assert "token" not in page.url  # taken out of the address bar
        assert page.evaluate("() => window.promptsegViewer.webgl")
        page.evaluate(f"() => window.promptsegViewer.goToSlice({SLICE})")
        assert page.evaluate("() => window.promptsegViewer.currentIJK()[2]") == SLICE

        # the canvas shows the scan: many grey levels, not a blank or uniform picture
        shot = _pixels(page)
        assert shot.std() > 30 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 100

        # a box dragged on the axial view, corners at the IJK voxel centres
        page.keyboard.press("r")
        start = page.evaluate(f"() => window.promptsegViewer.ijkToClient({BOX[0]}, {BOX[1]}, {SLICE})")
        end = page.evaluate(f"() => window.promptsegViewer.ijkToClient({BOX[2]}, {BOX[3]}, {SLICE})")
        centre = page.evaluate(f"() => window.promptsegViewer.ijkToClient(217, 357, {SLICE})")
        before = _pixel_at(page, centre)
        assert abs(before[0] - before[1]) < 10  # grey
        page.mouse.move(start["x"], start["y"])
        page.mouse.down()
        page.mouse.move(end["x"], end["y"], steps=8)
        page.mouse.up()
        _wait(page, "() => window.promptsegViewer.prompts === 1")
        event = page.evaluate("() => window.promptsegViewer.lastEvent")
        assert event["slice"] == SLICE
        volume = promptseg.load_volume(image("lung1"))
        library = promptseg.segment(volume, promptseg.make_object(slice=SLICE, box=BOX), litemedsam(), mode="2d")
        from promptseg.server.masks import decode_mask

        assert np.array_equal(decode_mask(event["mask"], volume.shape[1:]), library.mask(1)[SLICE])
        expected = expected_mask(volume)  # what promptseg.segment gives for the same box
        centre = page.evaluate(f"() => window.promptsegViewer.ijkToClient(217, 357, {SLICE})")
        after = _pixel_at(page, centre)
        assert after[0] > after[1] + 40  # the red label is drawn over the tumour

        # propagate through the volume, compare with the reference
        page.click("#propagate")
        _wait(page, "() => window.promptsegViewer.propagations === 1")
        done = page.evaluate("() => window.promptsegViewer.lastEvent")
        assert done["type"] == "done" and not done["cancelled"]
        page.select_option("#reference", label("lung1").name)
        page.click("#load-reference")
        _wait(page, "() => !!window.promptsegViewer.dice")
        shown = page.evaluate("() => window.promptsegViewer.dice.labels['1']")
        page.screenshot(path=str(shots / "viewer.png"))
        page.keyboard.press("l")  # one large axial view
        time.sleep(0.5)
        page.locator("main").screenshot(path=str(shots / "viewer-axial.png"))

        # save: the browser downloads the label map
        with page.expect_download() as download:
            page.click("#save")
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)

        # brush: a stroke of label 1 in the lung, saved on the server; then undone
        sid = page.evaluate("() => window.promptsegViewer.session.id")
        page.keyboard.press("b")
        a = page.evaluate(f"() => window.promptsegViewer.ijkToClient(150, 300, {SLICE})")
        b = page.evaluate(f"() => window.promptsegViewer.ijkToClient(175, 300, {SLICE})")
        at_stroke = f"() => window.promptsegViewer.labelAt(162, 300, {SLICE})"
        assert page.evaluate(at_stroke) == 0
        page.mouse.move(a["x"], a["y"])
        page.mouse.down()
        page.mouse.move(b["x"], b["y"], steps=10)
        page.mouse.up()
        _wait(page, "() => window.promptsegViewer.edits === 1")
        assert page.evaluate(at_stroke) == 1
        assert _server_labels(url, sid, tmp_path)[SLICE, 300, 162] == 1
        page.keyboard.press("Control+z")
        _wait(page, "() => window.promptsegViewer.undos === 1")
        assert page.evaluate(at_stroke) == 0 and page.evaluate(f"() => window.promptsegViewer.labelAt(217, 357, {SLICE})") == 1
        after_undo = _server_labels(url, sid, tmp_path)
        assert after_undo[SLICE, 300, 162] == 0 and np.array_equal(after_undo == 1, expected)

        # points: P, then a click inside the tumour on the next slice refines that slice
        page.keyboard.press("p")
        page.evaluate(f"() => window.promptsegViewer.goToSlice({SLICE + 1})")
        inside = page.evaluate(f"() => window.promptsegViewer.ijkToClient(218, 358, {SLICE + 1})")
        page.mouse.click(inside["x"], inside["y"])
        _wait(page, "() => window.promptsegViewer.prompts === 2")
        event = page.evaluate("() => window.promptsegViewer.lastEvent")
        assert event["slice"] == SLICE + 1 and event["area"] > 0
        browser.close()
    assert not errors
    reference = promptseg.load_labels(label("lung1"), reference=volume).array > 0
    labels = promptseg.load_labels(saved, reference=volume)
    assert labels.same_grid(volume)
    assert np.array_equal(labels.array == 1, expected)
    measured = promptseg.dice(labels.array == 1, reference)
    assert measured == pytest.approx(promptseg.dice(expected, reference), abs=1e-9)
    assert measured == pytest.approx(0.795, abs=0.001) and shown == pytest.approx(measured)


def test_without_webgl_the_page_says_so_instead_of_a_blank_canvas(tmp_path):
    _require_browser()
    from playwright.sync_api import sync_playwright

    from fakes import ThresholdSegmenter
    from promptseg.server import Settings

    settings = Settings(data_dirs=[image("lung1").parent], token=TOKEN, segmenter_factory=lambda name: ThresholdSegmenter())
    with _Server(settings) as url, sync_playwright() as playwright:
        browser = _launch(playwright, tmp_path, extra=["--disable-webgl", "--disable-3d-apis"])
        page = browser.new_page()
        page.goto(f"{url}/?token={TOKEN}")
        _wait(page, "() => !!(window.promptsegViewer && window.promptsegViewer.ready)", timeout=60)
        assert page.is_visible("#nowebgl") and not page.is_visible("#gl")
        assert "needs WebGL2" in page.inner_text("#nowebgl")
        assert page.inner_text("#status").startswith("WebGL2 is not available")
        browser.close()
