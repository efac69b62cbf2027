"""The server's limits answer in its own JSON: a whole-body deadline (408), the concurrency limit
and a full queue (503 with Retry-After), and settings that could never work are refused."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from server_models import jpeg_bytes

from emorec.errors import EmorecError
from emorec.serving.backend import OnnxBackend
from emorec.serving.server import ServeSettings, check_settings, create_app


@pytest.fixture(scope="module")
def backend(served_run):
    return OnnxBackend(served_run / "export" / "model.onnx", threads=1)


def _multipart(data: bytes, boundary: str = "b") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


async def _call(app, method: str, path: str, body_chunks, gap_s: float = 0.0, headers=()):
    """Drive the ASGI app directly: the body arrives in `body_chunks`, `gap_s` apart (a trickling client)."""
    chunks = list(body_chunks)
    sent, answer = {"status": None, "headers": {}, "body": b""}, []

    async def receive():
        if not chunks:
            await asyncio.sleep(3600)  # nothing more: a client that never finishes
        await asyncio.sleep(gap_s)
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
            sent["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")
        answer.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "headers": [(k.encode(), v.encode()) for k, v in headers], "client": ("127.0.0.1", 1), "server": ("t", 80)}
    await app(scope, receive, send)
    return sent


def _lifespan_app(backend, **settings):
    """The app with its lifespan started (batcher ready), as an async context manager."""
    from contextlib import asynccontextmanager

    app = create_app(ServeSettings(model=str(backend.path), **settings), backend)

    @asynccontextmanager
    async def running():
        async with app.router.lifespan_context(app):
            yield app

    return running()


def test_a_trickling_upload_is_cut_off_with_408_after_the_whole_body_deadline(backend):
    body = _multipart(jpeg_bytes())
    # One byte every 0.2 s: each read is quick, so a per-read timeout of 1 s would never fire.
    trickle = [body[i:i + 1] for i in range(len(body))]

    async def main():
        async with _lifespan_app(backend, body_timeout_s=1.0) as app:
            started = time.monotonic()
            answer = await _call(app, "POST", "/v1/predict", trickle, gap_s=0.2,
                                 headers=[("content-type", "multipart/form-data; boundary=b")])
            return answer, time.monotonic() - started

    answer, took = asyncio.run(main())
    assert answer["status"] == 408, answer
    assert 0.9 <= took < 2.5
    error = httpx.Response(408, content=answer["body"]).json()["error"]
    assert "1 s" in error and "\n" not in error


def test_the_concurrency_limit_is_a_json_503_with_retry_after_and_probes_still_answer(backend):
    async def main():
        async with _lifespan_app(backend, max_concurrency=1, max_wait_ms=1500, max_batch=64) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                slow = asyncio.ensure_future(client.post("/v1/predict", files=[("image", ("a.jpg", jpeg_bytes(), "image/jpeg"))]))
                await asyncio.sleep(0.4)  # the first request waits in its batch for company
                refused = await client.get("/v1/labels")
                ready = await client.get("/ready")
                return refused, ready, await slow

    refused, ready, slow = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert list(refused.json()) == ["error"] and "--max-concurrency" in refused.json()["error"]
    assert ready.status_code == 200
    assert slow.status_code == 200


def test_a_full_queue_is_an_http_503_with_retry_after(backend):
    async def main():
        async with _lifespan_app(backend, max_queue=1, max_images=1, max_wait_ms=1500, max_batch=64) as app:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                part = [("image", ("a.jpg", jpeg_bytes(), "image/jpeg"))]
                first = asyncio.ensure_future(client.post("/v1/predict", files=part))
                await asyncio.sleep(0.4)
                second = await client.post("/v1/predict", files=part)
                return second, await first

    second, first = asyncio.run(main())
    assert first.status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert "waiting" in second.json()["error"]


def test_a_request_after_shutdown_began_fails_fast_with_503(backend):
    async def main():
        async with _lifespan_app(backend) as app:
            await app.state.emorec.batcher.stop(timeout=1)  # the batcher is gone, the app still answers
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await asyncio.wait_for(client.post("/v1/predict", files=[("image", ("a.jpg", jpeg_bytes(), "image/jpeg"))]), 5)

    answer = asyncio.run(main())
    assert answer.status_code == 503 and "shutting down" in answer.json()["error"]


def test_settings_that_could_never_queue_a_full_request_are_refused():
    with pytest.raises(EmorecError, match="--max-images 32 is over --max-queue 16"):
        check_settings(ServeSettings(model="m", max_images=32, max_queue=16))
    for name in ("max_concurrency", "body_timeout_s", "face_detect_size"):
        with pytest.raises(EmorecError, match=name.replace("_", "-")):
            check_settings(ServeSettings(model="m", **{name: 0}))
    check_settings(ServeSettings(model="m", max_images=16, max_queue=16))


def test_sigterm_marks_the_app_draining_before_uvicorn_stops_it(backend):
    import signal

    from emorec.serving.server import ServerState, _drain_on_exit_signals

    state = ServerState(ServeSettings(model="m"), backend)
    seen = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, lambda *a: seen.append(state.draining))  # stands in for uvicorn's handler
        _drain_on_exit_signals(state)
        signal.raise_signal(signal.SIGTERM)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert state.draining is True
    assert seen == [True]  # draining was set before uvicorn's own handler ran
