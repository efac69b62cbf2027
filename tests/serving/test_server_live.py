"""A real `emorec serve` process on loopback: torch-free, survives a fuzz, shuts down gracefully."""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server_models import jpeg_bytes, live_server, rss_kb
from upload_samples import EPS, png_claiming

FUZZ_REQUESTS = 1000


@pytest.fixture(scope="module")
def server(served_run):
    with live_server(served_run / "export" / "model.onnx") as (url, proc):
        yield url, proc


def good_request(url: str) -> dict:
    response = httpx.post(url + "/v1/predict?top_k=4", files=[("image", ("good.jpg", jpeg_bytes(seed=7), "image/jpeg"))], timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_onnx_backend_serves_without_torch(server):
    url, proc = server
    good_request(url)
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "/torch/" not in maps


def _raw(url: str, payload: bytes, linger: float = 0.0) -> None:
    """Send raw bytes on a new connection, optionally wait (a slow client), read a little, close."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(payload)
        if linger:
            time.sleep(linger)
            return  # a slow client that gives up without finishing its request
        try:
            s.recv(4096)
        except OSError:
            pass


def _malformed(i: int, rng: random.Random, url: str, client: httpx.Client):
    """One malformed request of kind i % 10; returns the response for those that are HTTP-valid."""
    jpeg = jpeg_bytes(size=(96, 96), seed=i % 5)
    part = lambda name, data, kind="image/jpeg": [("image", (name, data, kind))]  # noqa: E731
    kind = i % 10
    post = lambda **kw: client.post(url + "/v1/predict", **kw)  # noqa: E731
    if kind == 0:
        return post(files=part("noise.jpg", rng.randbytes(rng.randint(1, 4000))))
    if kind == 1:
        return post(files=part("cut.jpg", jpeg[: rng.randint(1, len(jpeg) - 1)]))
    if kind == 2:
        return post(content=rng.randbytes(rng.randint(0, 3000)), headers={"content-type": "multipart/form-data; boundary=zz"})
    if kind == 3:
        return post(content=b'{"image": "/etc/passwd"}', headers={"content-type": rng.choice(["application/json", "text/plain", "image/jpeg"])})
    if kind == 4:
        return post(files=part("bomb.png", png_claiming(rng.choice([9000, 50_000]), 9000), "image/png"))
    if kind == 5:
        return post(files=part(rng.choice(["a.eps", "a.pdf"]), EPS, rng.choice(["application/postscript", "application/octet-stream"])))
    if kind == 6:
        return client.post(url + f"/v1/predict?top_k={rng.choice(['-3', 'x', '0', '99999999999999999999'])}&faces=maybe",
                           files=part("a.jpg", jpeg))
    if kind == 7:
        _raw(url, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * rng.randint(20_000, 200_000) + b"\r\n\r\n")
    elif kind == 8:
        _raw(url, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n", linger=rng.uniform(0.01, 0.05))
    else:
        _raw(url, rng.randbytes(rng.randint(1, 300)) + b"\r\n\r\n")
    return None


def test_a_thousand_malformed_requests_leave_the_server_healthy(server):
    url, proc = server
    before_answer = good_request(url)
    rng = random.Random(0)
    seeds = [rng.randrange(1 << 30) for _ in range(FUZZ_REQUESTS)]

    def fuzz(indices):
        # One pooled client: a new httpx client per request costs more than the request itself.
        with ThreadPoolExecutor(max_workers=8) as pool, httpx.Client(timeout=5) as client:
            return list(pool.map(lambda i: _malformed(i, random.Random(seeds[i]), url, client), indices))

    fuzz(range(100))  # warm-up: the allocator's pools and the error paths, so growth below is real
    baseline = rss_kb(proc.pid)
    started = time.monotonic()
    responses = fuzz(range(FUZZ_REQUESTS))
    elapsed = time.monotonic() - started

    assert proc.poll() is None
    answered = [r for r in responses if r is not None]
    assert len(answered) == 700
    assert all(400 <= r.status_code < 500 for r in answered), sorted({r.status_code for r in answered})
    for r in answered:
        body = r.json()
        assert list(body) == ["error"] and "\n" not in body["error"]
    assert httpx.get(url + "/health", timeout=5).json() == {"status": "ok"}
    grown = rss_kb(proc.pid) / baseline - 1
    assert grown <= 0.10, f"RSS grew {grown:.1%} over {FUZZ_REQUESTS} malformed requests"
    assert good_request(url) == before_answer
    print(f"{FUZZ_REQUESTS} malformed requests in {elapsed:.1f} s, RSS {baseline / 1024:.0f} MB, grew {grown:+.1%}")


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(served_run):
    # A batch that waits 3 s for company keeps the first request in flight while SIGTERM arrives.
    with live_server(served_run / "export" / "model.onnx", "--max-wait-ms", "3000", "--max-batch", "64") as (url, proc):
        result = {}
        thread = threading.Thread(target=lambda: result.update(answer=good_request(url)))
        thread.start()
        deadline = time.monotonic() + 10
        while "emorec_http_requests_in_flight 2.0" not in httpx.get(url + "/metrics").text:  # the predict + this one
            assert time.monotonic() < deadline, "the request never arrived"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)
        thread.join(timeout=15)
        assert [p["filename"] for p in result["answer"]["predictions"]] == ["good.jpg"]
        assert proc.wait(timeout=15) == -signal.SIGTERM  # uvicorn re-raises the signal once drained


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_several_workers_answer_share_their_metrics_and_never_see_the_key_in_their_environment(served_run):
    key = "k3y-that-must-stay-out-of-environments"
    with live_server(served_run / "export" / "model.onnx", "--workers", "2", "--api-key", key) as (url, proc):
        headers = {"Authorization": f"Bearer {key}"}
        answers = []
        for _ in range(4):  # each on a new connection: either worker may answer
            response = httpx.post(url + "/v1/predict?top_k=4", headers=headers, timeout=10,
                                  files=[("image", ("good.jpg", jpeg_bytes(seed=7), "image/jpeg"))])
            assert response.status_code == 200, response.text
            answers.append(response.json())
        assert all(a == answers[0] for a in answers)
        assert httpx.post(url + "/v1/predict", files=[("image", ("a.jpg", jpeg_bytes(), "image/jpeg"))]).status_code == 401
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert 'emorec_http_requests_total{method="POST",route="/v1/predict",status="200"} 4.0' in metrics
        workers = [c for c in _children(proc.pid) if b"multiprocessing" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(workers) >= 2
        for pid in [proc.pid, *workers]:
            assert key.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
