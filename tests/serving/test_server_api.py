"""The HTTP contract of `emorec serve`, in process: routes, answers, limits, keys, errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_models import jpeg_bytes
from upload_samples import EPS, png_claiming

from emorec.errors import EmorecError
from emorec.serving.backend import OnnxBackend
from emorec.serving.predict import predict as predict_files
from emorec.serving.server import ServeSettings, check_settings, create_app


@pytest.fixture(scope="module")
def onnx_model(served_run) -> Path:
    return served_run / "export" / "model.onnx"


@pytest.fixture(scope="module")
def backend(onnx_model):
    return OnnxBackend(onnx_model, threads=1)


def client_for(backend, **settings) -> TestClient:
    return TestClient(create_app(ServeSettings(model=str(backend.path), **settings), backend), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(backend):
    with client_for(backend) as c:
        yield c


def image_part(name="a.jpg", data=None, kind="image/jpeg"):
    return ("image", (name, jpeg_bytes() if data is None else data, kind))


def assert_one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def test_predict_answers_the_documented_shape_for_several_images(client, served_run, tmp_path):
    files = {"red.jpg": jpeg_bytes(colour=(220, 20, 20)), "green.jpg": jpeg_bytes(colour=(20, 220, 20), seed=1)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    response = client.post("/v1/predict?top_k=2", files=[image_part(n, d) for n, d in files.items()])
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == list(files)
    labels = client.get("/v1/labels").json()["labels"]
    expected, _ = predict_files(served_run / "export" / "model.onnx", [tmp_path / n for n in files], top_k=2)
    for prediction, reference in zip(predictions, expected):
        assert set(prediction) == {"filename", "top_k"}
        assert [set(t) for t in prediction["top_k"]] == [{"label", "probability"}] * 2
        assert all(t["label"] in labels for t in prediction["top_k"])
        assert prediction["top_k"][0]["probability"] >= prediction["top_k"][1]["probability"]
        # Same numbers as `emorec predict` on the same bytes.
        assert [(t["label"], pytest.approx(t["probability"], abs=1e-5)) for t in prediction["top_k"]] == \
               [(label, prob) for label, prob in reference.top]


def test_top_k_is_capped_at_the_label_count_and_validated(client):
    answer = client.post("/v1/predict?top_k=50", files=[image_part()]).json()
    top = answer["predictions"][0]["top_k"]
    assert len(top) == 4 and sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-4)
    assert "top_k" in assert_one_line_error(client.post("/v1/predict?top_k=0", files=[image_part()]), 400)
    assert "top_k" in assert_one_line_error(client.post("/v1/predict?top_k=many", files=[image_part()]), 400)


def test_operations_routes(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"
    assert client.get("/v1/labels").json() == {"labels": ["amusement", "anger", "awe", "fear"]}
    info = client.get("/v1/model").json()
    assert info["backend"] == "onnx" and info["explain"] is False
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/labels", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert "swagger" in client.get("/docs").text.lower()


def test_metrics_count_requests_errors_and_batch_sizes(backend):
    with client_for(backend) as c:
        c.post("/v1/predict", files=[image_part("a.jpg"), image_part("b.jpg")])
        c.post("/v1/predict", files=[image_part("bad.jpg", b"not an image")])
        text = c.get("/metrics").text
    assert 'emorec_http_requests_total{method="POST",route="/v1/predict",status="200"} 1.0' in text
    assert 'emorec_http_errors_total{route="/v1/predict",status="415"} 1.0' in text
    assert "emorec_batch_size_images_count 1.0" in text and "emorec_batch_size_images_sum 2.0" in text
    assert 'emorec_http_request_duration_seconds_count{route="/v1/predict"} 2.0' in text


def test_binding_beyond_loopback_needs_an_api_key():
    with pytest.raises(EmorecError, match="--api-key"):
        check_settings(ServeSettings(model="m.onnx", host="0.0.0.0"))
    check_settings(ServeSettings(model="m.onnx", host="0.0.0.0", api_key="k"))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_settings(ServeSettings(model="m.onnx", host=host))


def test_the_cli_refuses_an_unguarded_public_bind_before_loading(capsys, monkeypatch):
    from emorec.cli import main

    monkeypatch.delenv("EMOREC_API_KEY", raising=False)
    assert main(["serve", "no-such-model.onnx", "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_an_api_key_guards_every_v1_route_and_nothing_else(backend):
    with client_for(backend, api_key="s3cret") as c:
        for method, path in (("get", "/v1/labels"), ("get", "/v1/model"), ("post", "/v1/predict"), ("post", "/v1/explain")):
            assert "API key" in assert_one_line_error(getattr(c, method)(path), 401)
        wrong = c.get("/v1/labels", headers={"Authorization": "Bearer nope"})
        assert_one_line_error(wrong, 401)
        assert c.get("/v1/labels", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/predict", files=[image_part()], headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200


def test_bodies_over_the_upload_limit_get_413(backend):
    big = jpeg_bytes(size=(1200, 1200), seed=3)  # ~0.5 MB of noise
    with client_for(backend, max_upload_mb=0.1) as c:
        assert "--max-upload-mb" in assert_one_line_error(c.post("/v1/predict", files=[image_part(data=big)]), 413)
        # Without a Content-Length (chunked), the body is cut off once it passes the limit.
        body = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n" + big + b"\r\n--b--\r\n"
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        response = c.post("/v1/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"})
        assert_one_line_error(response, 413)


def test_decompression_bombs_get_413(client):
    for width, height in ((50_000, 50_000), (8000, 8000)):
        response = client.post("/v1/predict", files=[image_part("bomb.png", png_claiming(width, height), "image/png")])
        assert "pixels" in assert_one_line_error(response, 413)


@pytest.mark.parametrize("part, status", [
    (("noise.jpg", b"\x00\x01random bytes" * 50, "image/jpeg"), 415),
    (("a.eps", EPS, "application/octet-stream"), 415),
    (("a.txt", jpeg_bytes(), "text/plain"), 415),
    (("cut.jpg", jpeg_bytes(size=(200, 200))[:700], "image/jpeg"), 400),
    (("empty.jpg", b"", "image/jpeg"), 400),
])
def test_bad_uploads_get_415_or_400_naming_the_file(client, part, status):
    message = assert_one_line_error(client.post("/v1/predict", files=[("image", part)]), status)
    assert part[0] in message


def test_malformed_requests_get_one_line_json_errors(client):
    assert_one_line_error(client.post("/v1/predict", json={"image": "x"}), 415)
    assert_one_line_error(client.post("/v1/predict", files=[("photo", ("a.jpg", jpeg_bytes(), "image/jpeg"))]), 400)
    garbage = client.post("/v1/predict", content=b"--x\r\nnot a part header\r\n\r\n", headers={"content-type": "multipart/form-data; boundary=x"})
    assert "multipart" in assert_one_line_error(garbage, 400)
    no_boundary = client.post("/v1/predict", content=b"abc", headers={"content-type": "multipart/form-data"})
    assert_one_line_error(no_boundary, 400)
    assert_one_line_error(client.get("/v1/nothing"), 404)
    assert_one_line_error(client.put("/v1/predict"), 405)
    too_many = [image_part(f"{i}.jpg") for i in range(17)]
    assert_one_line_error(client.post("/v1/predict", files=too_many), 400)


def test_the_server_never_reads_a_path_or_fetches_a_url_it_is_given(client, served_run):
    on_disk = next((served_run.parent / "data" / "awe").iterdir())  # a readable image on this machine
    # Its path as the part's file name, with no bytes: reading the path would have answered 200.
    assert_one_line_error(client.post("/v1/predict", files=[image_part(str(on_disk), b"")]), 400)
    assert "paths or fetch URLs" in assert_one_line_error(client.post("/v1/predict", files=[("image", (None, str(on_disk)))]), 400)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/photo.jpg"
        assert "paths or fetch URLs" in assert_one_line_error(client.post("/v1/predict", files=[("image", (None, url))]), 400)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came


def test_explain_on_the_onnx_backend_is_a_clear_400(client):
    message = assert_one_line_error(client.post("/v1/explain", files=[image_part()]), 400)
    assert "--backend torch" in message


def test_a_failing_model_gives_a_500_line_not_a_traceback(backend):
    class Broken:
        name, labels, min_size, can_explain = "broken", backend.labels, backend.min_size, False
        prepare = backend.prepare

        def forward(self, batch):
            raise RuntimeError("the model fell over\nwith a second line")

    with TestClient(create_app(ServeSettings(model="x"), Broken()), raise_server_exceptions=False) as c:
        message = assert_one_line_error(c.post("/v1/predict", files=[image_part()]), 500)
        assert "RuntimeError" in message and "fell over" not in message
        assert c.get("/health").status_code == 200


def test_the_page_and_its_files_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert json.loads(client.get("/static/nothing.js").text) == {"error": "no route GET /static/nothing.js; the API is described at /docs"}


def test_the_api_docs_load_nothing_from_outside(client):
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, "the docs page names no files"
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from outside"
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404  # ReDoc would load its script from a CDN
