"""The page's camera mode, in a real headless Chromium whose fake camera plays a shipped portrait.

Chromium's fake capture device reads a Y4M file (`--use-file-for-fake-video-capture`), so the
test writes one from scikit-image's astronaut and serves the tiny model with MTCNN faces. Its
labels are not face labels; the page only draws what the API answers. Needs Debian's `chromium`
and the `playwright` package like test_web_page.py, and skips the same way without them. Set
EMOREC_SCREENSHOT_DIR to keep the screenshot.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from face_photos import shipped_photo
from PIL import Image
from server_models import live_server
from test_web_page import CHROMIUM, CHROMIUM_ARGS

WIDTH, HEIGHT, FRAMES = 640, 480, 4


def write_y4m(path: Path, photo: Image.Image, frames: int = FRAMES) -> Path:
    """A 4:2:0 Y4M clip of `photo` letterboxed on grey, shifted a few pixels per frame so the
    frames differ; full-range YCbCr (PIL's JPEG conversion), hence C420jpeg."""
    photo = photo.resize((HEIGHT, HEIGHT))
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            frame = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
            frame.paste(photo, ((WIDTH - HEIGHT) // 2 + 4 * i, 0))
            y, u, v = frame.convert("YCbCr").split()
            out.write(b"FRAME\n")
            out.write(np.asarray(y, dtype=np.uint8).tobytes())
            for plane in (u, v):
                out.write(np.asarray(plane.resize((WIDTH // 2, HEIGHT // 2), Image.BILINEAR), dtype=np.uint8).tobytes())
    return path


def test_write_y4m_lays_out_header_and_planes(tmp_path):
    clip = write_y4m(tmp_path / "c.y4m", Image.new("RGB", (10, 10), (255, 255, 255)), frames=2)
    data = clip.read_bytes()
    header, _, rest = data.partition(b"\n")
    assert header == b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg"
    frame_bytes = len(b"FRAME\n") + WIDTH * HEIGHT * 3 // 2
    assert len(rest) == 2 * frame_bytes and rest.startswith(b"FRAME\n")


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e '.[dev]')")
    clip = write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", shipped_photo("astronaut"))
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield browser
        browser.close()


def test_the_camera_boxes_faces_live_one_request_at_a_time(camera_browser, served_run, tmp_path):
    pytest.importorskip("facenet_pytorch", reason="faces=true needs facenet-pytorch (MTCNN)")
    model = served_run / "export" / "model.onnx"
    with live_server(model) as (url, _):
        page = camera_browser.new_page(viewport={"width": 1000, "height": 720})
        offline, events = [], []
        page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith(("blob:", "data:")) else offline.append(r.url))
        # A CSP refusal shows only as a console error; a script fault as a page error. (The
        # favicon's 404 is a console error too, hence the filter.)
        page.on("console", lambda m: events.append(("console", m.text)) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: events.append(("pageerror", str(e))))
        for kind, delta in (("request", 1), ("requestfinished", -1), ("requestfailed", -1)):
            page.on(kind, lambda r, d=delta: events.append(("predict", d)) if "/v1/predict" in r.url else None)
        page.goto(url + "/")
        page.wait_for_selector("#model-line:not(:has-text('loading'))")
        assert page.evaluate("() => fetch('/v1/model').then(r => r.json()).then(m => m.faces)"), "MTCNN unavailable"
        page.click("#camera-start")
        label = page.wait_for_selector("#camera-boxes .face span", timeout=30_000)
        assert label.inner_text().strip()
        page.wait_for_function("() => parseFloat(document.getElementById('camera-fps').textContent) > 0", timeout=15_000)
        time.sleep(4)  # a few more frames, for the in-flight count and a timeline worth a look
        fps = float(page.inner_text("#camera-fps"))
        # Boxes are redrawn per frame, so both rectangles are read in one script turn, at a
        # moment a face box is on screen (two separate Playwright reads can straddle a redraw).
        box, video = page.wait_for_function(
            """() => {
                const face = document.querySelector('#camera-boxes .face');
                if (!face || face.getBoundingClientRect().width === 0) return null;
                const rect = (el) => { const r = el.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; };
                return [rect(face), rect(document.getElementById('camera-video'))];
            }""", timeout=15_000).json_value()
        shot = tmp_path / "serve_camera.png"
        page.screenshot(path=str(shot), full_page=True)
        page.click("#camera-stop")
        stopped = page.evaluate("() => document.getElementById('camera-video').srcObject === null")
        page.wait_for_timeout(500)  # let a last answer, if any, arrive before counting
        page.close()
    in_flight, most, sent = 0, 0, 0
    for kind, delta in events:
        assert kind == "predict", f"{kind}: {delta}"
        in_flight += delta
        sent += delta > 0
        most = max(most, in_flight)
    assert sent >= 2 and most == 1, f"{sent} predict requests, at most {most} in flight"
    assert fps > 0 and stopped and offline == []
    # The face box lies inside the displayed video: the frame's pixels were scaled to it.
    assert video["x"] <= box["x"] and box["x"] + box["width"] <= video["x"] + video["width"] + 1
    assert video["y"] <= box["y"] and box["y"] + box["height"] <= video["y"] + video["height"] + 1
    print(f"camera mode: {fps} analysed frames per second, {sent} frames sent")
    if os.environ.get("EMOREC_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["EMOREC_SCREENSHOT_DIR"]) / shot.name)


def test_without_faces_the_camera_labels_the_whole_frame_and_sends_the_key(camera_browser, served_run):
    model = served_run / "export" / "model.onnx"
    with live_server(model, "--api-key", "sesame") as (url, _):
        page = camera_browser.new_page(viewport={"width": 1000, "height": 720})
        predicts = []
        page.on("request", lambda r: predicts.append((r.url, r.headers.get("authorization"))) if "/v1/predict" in r.url else None)

        # A server without face detection, as the page sees it: /v1/model says "faces": false.
        def no_faces(route):
            answer = route.fetch()
            route.fulfill(response=answer, json={**answer.json(), "faces": False})

        page.route("**/v1/model", no_faces)
        page.goto(url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        page.fill("#key", "sesame")
        page.click("#key-form button")
        page.wait_for_selector("#model-line:has-text('labels')")
        page.click("#camera-start")
        tag = page.wait_for_selector("#camera-boxes .frame-label", timeout=20_000)
        assert tag.inner_text().split()[0] in {"amusement", "anger", "awe", "fear"}
        assert page.locator("#camera-boxes .face").count() == 0
        page.click("#camera-stop")
        page.close()
    assert predicts and all("faces=true" not in u and key == "Bearer sesame" for u, key in predicts)
