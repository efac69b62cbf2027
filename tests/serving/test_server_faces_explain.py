"""faces=true and /v1/explain, against the faces / Grad-CAM contract (docs: issue 15).

The tests that need `emorec.faces` or `emorec.explain` skip while those packages are absent; the
ones that check the answer without them run always.
"""

from __future__ import annotations

import importlib.util
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_models import jpeg_bytes

from emorec.serving.backend import OnnxBackend, TorchBackend
from emorec.serving.server import ServeSettings, create_app


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


@pytest.fixture(scope="module")
def torch_client(served_run):
    backend = TorchBackend(served_run)
    with TestClient(create_app(ServeSettings(model=str(served_run), backend="torch"), backend), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def onnx_client(served_run):
    backend = OnnxBackend(served_run / "export" / "model.onnx", threads=1)
    with TestClient(create_app(ServeSettings(model=str(backend.path)), backend), raise_server_exceptions=False) as c:
        yield c


def photo(size=(64, 48)):
    return [("image", ("photo.jpg", jpeg_bytes(size=size, seed=4), "image/jpeg"))]


def test_explain_without_the_explain_package_is_a_clear_501(torch_client, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "emorec.explain.gradcam", None)  # as if it were not installed
    response = torch_client.post("/v1/explain", files=photo())
    assert response.status_code == 501 and "Grad-CAM" in response.json()["error"]
    assert torch_client.get("/v1/model").json()["explain"] is False


def test_explain_refuses_an_unknown_label_before_reading_the_image(torch_client):
    if not _installed("emorec.explain.gradcam"):
        pytest.skip("needs emorec.explain (issue 15)")
    response = torch_client.post("/v1/explain?label=joyful", files=photo())
    assert response.status_code == 400 and "amusement" in response.json()["error"]
    # A body the server would refuse with 415 once read: the label's 400 shows it never was.
    unread = torch_client.post("/v1/explain?label=joyful", content=b"not a form", headers={"content-type": "text/plain"})
    assert unread.status_code == 400 and "unknown label 'joyful'" in unread.json()["error"]


def test_explain_returns_the_overlay_as_png_at_the_photo_size(torch_client):
    pytest.importorskip("emorec.explain.gradcam")
    assert torch_client.get("/v1/model").json()["explain"] is True
    response = torch_client.post("/v1/explain", files=photo((64, 48)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.format == "PNG" and overlay.size == (64, 48)
    top = torch_client.post("/v1/predict?top_k=1", files=photo((64, 48))).json()["predictions"][0]["top_k"][0]["label"]
    assert response.headers["x-emorec-label"] == top  # by default the top label is explained
    chosen = torch_client.post("/v1/explain?label=fear", files=photo((64, 48)))
    assert chosen.status_code == 200 and chosen.headers["x-emorec-label"] == "fear"


def test_explain_on_the_onnx_backend_is_400_even_with_the_package(onnx_client):
    response = onnx_client.post("/v1/explain", files=photo())
    assert response.status_code == 400 and "torch backend" in response.json()["error"]


class StubDetector:
    """Finds the same face in every photo, so the test does not depend on detector weights."""

    def __init__(self, boxes):
        from emorec.faces.detect import Face

        self.faces = [Face(box=box, score=0.9) for box in boxes]

    def detect(self, image):
        return list(self.faces)


def test_faces_true_adds_each_face_with_its_box_and_labels(onnx_client):
    pytest.importorskip("emorec.faces.predict")
    assert onnx_client.get("/v1/model").json()["faces"] is True
    state = onnx_client.app.state.emorec
    state._detector = StubDetector([(4.0, 6.0, 40.0, 44.0), (30.5, 2.0, 60.0, 30.0)])
    try:
        response = onnx_client.post("/v1/predict?faces=true&top_k=2", files=photo((64, 48)) + photo((64, 48)))
    finally:
        state._detector = None
    assert response.status_code == 200, response.text
    labels = onnx_client.get("/v1/labels").json()["labels"]
    for prediction in response.json()["predictions"]:
        assert set(prediction) == {"filename", "top_k", "faces"} and len(prediction["top_k"]) == 2
        assert [f["box"] for f in prediction["faces"]] == [[4.0, 6.0, 40.0, 44.0], [30.5, 2.0, 60.0, 30.0]]
        for face in prediction["faces"]:
            assert len(face["top_k"]) == 2 and all(t["label"] in labels for t in face["top_k"])
            assert face["top_k"][0]["probability"] >= face["top_k"][1]["probability"]


def test_faces_true_on_a_photo_without_faces_gives_an_empty_list(onnx_client):
    pytest.importorskip("emorec.faces.predict")
    state = onnx_client.app.state.emorec
    state._detector = StubDetector([])
    try:
        answer = onnx_client.post("/v1/predict?faces=true", files=photo()).json()
    finally:
        state._detector = None
    assert answer["predictions"][0]["faces"] == [] and len(answer["predictions"][0]["top_k"]) == 3


def _jpeg(image: Image.Image, exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    image.save(buf, format="JPEG", quality=92, **kwargs)
    return buf.getvalue()


def _iou(a, b) -> float:
    from emorec.faces.collage import box_iou

    return box_iou(tuple(a), tuple(b))


@pytest.fixture(scope="module")
def astronaut_face():
    """The astronaut's face box as MTCNN finds it on scikit-image's 512 x 512 original."""
    pytest.importorskip("facenet_pytorch")
    pytest.importorskip("skimage")
    from face_photos import shipped_photo

    from emorec.faces.detect import create_detector

    photo = shipped_photo("astronaut")
    faces = create_detector("mtcnn").detect(photo)
    assert len(faces) == 1
    return photo, faces[0].box


def test_faces_on_a_phone_sized_jpeg_come_back_in_the_photos_own_pixels(onnx_client, astronaut_face):
    photo, box = astronaut_face
    big = photo.resize((4096, 4096), Image.Resampling.BICUBIC)  # 16.8 MP: decoded at 1/2 scale for a 1280 px detector
    response = onnx_client.post("/v1/predict?faces=true&top_k=1", files=[("image", ("phone.jpg", _jpeg(big), "image/jpeg"))])
    assert response.status_code == 200, response.text
    faces = response.json()["predictions"][0]["faces"]
    assert len(faces) == 1
    assert _iou(faces[0]["box"], [8 * v for v in box]) >= 0.8


def test_faces_on_an_exif_rotated_upload_are_in_upright_pixels(onnx_client, astronaut_face):
    photo, (x1, y1, x2, y2) = astronaut_face
    # Stored turned 90 degrees counter-clockwise with orientation 6: shown upright, as the original.
    stored = photo.resize((1600, 1600), Image.Resampling.BICUBIC).transpose(Image.Transpose.ROTATE_90)
    response = onnx_client.post("/v1/predict?faces=true&top_k=1", files=[("image", ("sideways.jpg", _jpeg(stored, 6), "image/jpeg"))])
    assert response.status_code == 200, response.text
    faces = response.json()["predictions"][0]["faces"]
    assert len(faces) == 1
    assert _iou(faces[0]["box"], [v * 1600 / 512 for v in (x1, y1, x2, y2)]) >= 0.8


def test_faces_without_the_detector_package_is_a_501_and_not_offered(served_run, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "facenet_pytorch", None)  # as if it were not installed
    backend = OnnxBackend(served_run / "export" / "model.onnx", threads=1)
    with TestClient(create_app(ServeSettings(model=str(backend.path)), backend), raise_server_exceptions=False) as client:
        assert client.get("/v1/model").json()["faces"] is False
        response = client.post("/v1/predict?faces=true", files=photo())
        assert response.status_code == 501, response.text
        assert list(response.json()) == ["error"] and "facenet" in response.json()["error"]
        assert client.post("/v1/predict", files=photo()).status_code == 200  # without faces, all is well


def test_a_detector_that_is_installed_but_cannot_be_built_is_a_501_too(served_run, monkeypatch):
    import emorec.faces.detect as detect
    from emorec.errors import EmorecError

    def unusable(name, device="cpu"):
        raise EmorecError("OpenCV 5.0 ships no Haar cascade files")

    monkeypatch.setattr(detect, "create_detector", unusable)
    backend = OnnxBackend(served_run / "export" / "model.onnx", threads=1)
    with TestClient(create_app(ServeSettings(model=str(backend.path)), backend), raise_server_exceptions=False) as client:
        response = client.post("/v1/predict?faces=true", files=photo())
    assert response.status_code == 501 and "no Haar cascade" in response.json()["error"]
