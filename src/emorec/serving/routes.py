"""The routes of `emorec serve`: predict (with faces), explain, labels, model info, operations."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from starlette.formparsers import MultiPartException
from starlette.exceptions import HTTPException as StarletteHTTPException

from emorec.serving.guard import BodyTimeout, BodyTooLarge, error_response
from emorec.serving.uploads import UploadError, check_content_type, decode_upload

EXPLAIN_MAX_SIDE = 1024  # Grad-CAM runs on a display-sized copy: the page shows no more than this
MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["image"],
            "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"},
                                     "description": "one or more image files (JPEG, PNG, WebP, BMP, GIF, TIFF)"}},
        }}},
    }
}


def require_key(key: str | None):
    import hmac

    async def check(request: Request) -> None:
        if not key:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise StarletteHTTPException(401, "missing or wrong API key; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                         headers={"WWW-Authenticate": "Bearer"})

    return check


async def read_uploads(request: Request, settings) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every `image` part; the form's temporary files are closed here."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UploadError(415, f"content type '{content_type.split(';')[0] or 'none'}' is not multipart/form-data; "
                               "send the image as multipart field 'image'")
    try:
        form = await request.form(max_files=settings.max_images, max_fields=32)
    except BodyTooLarge:
        raise UploadError(413, f"request body is over the limit of {settings.max_upload_mb:g} MB (--max-upload-mb)") from None
    except BodyTimeout:
        raise UploadError(408, f"the upload did not arrive within {settings.body_timeout_s:g} s (--body-timeout)") from None
    except (MultiPartException, StarletteHTTPException) as e:  # Starlette re-raises the first as the second
        raise UploadError(400, f"malformed multipart body ({getattr(e, 'message', None) or e.detail})") from None
    try:
        parts = form.getlist("image")
        if not parts:
            raise UploadError(400, "no image: send each file as multipart field 'image'")
        uploads = []
        for i, part in enumerate(parts):
            if isinstance(part, str):
                raise UploadError(400, "field 'image' must be a file upload; the server does not read paths or fetch URLs")
            name = (part.filename or f"image{i + 1}")[:255]
            check_content_type(part.content_type, name)
            uploads.append((name, await part.read()))
        return uploads
    finally:
        await form.close()


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[dict]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": labels[i], "probability": round(float(probs[i]), 6)} for i in order]


def face_json(face: dict) -> dict:
    out = dict(face)
    out["box"] = [round(float(v), 1) for v in face["box"]]
    if "det_score" in out:
        out["det_score"] = round(float(out["det_score"]), 4)
    out["top_k"] = [{"label": t["label"], "probability": round(float(t["probability"]), 6)} for t in face["top_k"]]
    return out


def module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # the parent package is missing
        return False


async def predict_with_faces(state, name: str, data: bytes, k: int) -> dict:
    """One photo's whole-image top-k and its faces.

    Memory and CPU stay bounded: `state.face_slots` lets at most `decode_threads` photos be held
    decoded at once across all requests (a PNG is decoded at full size); JPEGs are decoded at the
    smallest draft scale still >= the detection size; detection runs on its own thread, so it
    never holds up the decoding of other requests.
    """
    from emorec.faces.detect import detect_faces
    from emorec.faces.predict import face_crops, face_results

    settings, backend = state.settings, state.backend
    loop = asyncio.get_running_loop()
    # Built on first use (MTCNN loads its weights): on the face thread, not in the event loop.
    detector = await loop.run_in_executor(state.face_pool, state.detector)
    async with state.face_slots:
        decoded = await loop.run_in_executor(state.decode_pool, decode_upload, data, name, settings.max_pixels,
                                             max(backend.min_size or 0, settings.face_detect_size))
        image, scale = decoded.image, decoded.scale
        del decoded  # the image must go with the slot: nothing else may keep it
        faces = await loop.run_in_executor(state.face_pool, detect_faces, detector, image, settings.face_detect_size)

        def prepare_all(photo):
            return np.stack([backend.prepare(im) for im in [photo, *face_crops(photo, faces)]])

        arrays = await loop.run_in_executor(state.decode_pool, prepare_all, image)
        del image
    probs = await state.batcher.submit(arrays)
    found = face_results(faces, probs[1:], backend.labels, k, scale)
    return {"filename": name, "top_k": top_k(probs[0], backend.labels, k), "faces": [face_json(f) for f in found]}


def build_routes(app: FastAPI, state) -> None:
    settings = state.settings
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key(settings.api_key))], tags=["model"])

    def require_ready() -> None:
        if not state.ready:
            raise UploadError(503, "model is not loaded yet; retry when /ready answers 200")

    def decode_and_prepare(name: str, data: bytes):
        return state.backend.prepare(decode_upload(data, name, settings.max_pixels, state.backend.min_size).image)

    @app.get("/health", tags=["operations"])
    async def health():
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready():
        """Readiness: the model is loaded and the server is not shutting down."""
        if state.draining:
            return error_response(503, "shutting down")
        if not state.ready:
            return error_response(503, "model loading")
        return {"status": "ready", "backend": state.backend.name}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics():
        """Prometheus text format: requests, latency, batch sizes, errors."""
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @v1.get("/labels")
    async def labels():
        """The label names, in the model's output order."""
        require_ready()
        return {"labels": state.backend.labels}

    @v1.get("/model")
    async def model_info():
        """What this server offers: backend, labels, whether faces and explanations are available."""
        require_ready()
        return {
            "backend": state.backend.name,
            "precision": getattr(state.backend, "precision", "fp32"),
            "labels": state.backend.labels,
            "faces": state.faces_missing() is None,
            "explain": state.backend.can_explain and module_available("emorec.explain.gradcam"),
            "max_images": settings.max_images,
            "max_upload_mb": settings.max_upload_mb,
        }

    @v1.post("/predict", openapi_extra=MULTIPART_BODY)
    async def predict(request: Request, top_k_: int = Query(3, alias="top_k", ge=1, le=1000, description="labels per image"),
                      faces: bool = Query(False, description="also find faces and label each one (face models)")):
        """Top-k emotions for each uploaded image (and for each face in it with faces=true).

        Face boxes are in the uploaded photo's own pixels, after its EXIF rotation."""
        require_ready()
        if faces and (missing := state.faces_missing()) is not None:
            raise UploadError(501, f"face detection is not available on this server ({missing}); predict without faces=true")
        uploads = await read_uploads(request, settings)
        k = min(top_k_, len(state.backend.labels))
        if faces:
            # One photo after another: a request never holds more than one decoded photo.
            return {"predictions": [await predict_with_faces(state, name, data, k) for name, data in uploads]}
        loop = asyncio.get_running_loop()
        names = [name for name, _ in uploads]
        arrays = await asyncio.gather(*(loop.run_in_executor(state.decode_pool, decode_and_prepare, name, data)
                                        for name, data in uploads))
        del uploads
        probs = await state.batcher.submit(np.stack(arrays))
        return {"predictions": [{"filename": name, "top_k": top_k(p, state.backend.labels, k)} for name, p in zip(names, probs)]}

    @v1.post("/explain", openapi_extra=MULTIPART_BODY, response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the photo with the Grad-CAM heat map over it"}})
    async def explain(request: Request, label: str | None = Query(None, description="label to explain (default: the top one)")):
        """Grad-CAM overlay as PNG: where the model looked for `label`. Torch backend only."""
        require_ready()
        if not state.backend.can_explain:
            raise UploadError(400, f"explanations need the torch backend (this server runs {state.backend.name}); "
                                   "start it with --backend torch and a run directory")
        if not module_available("emorec.explain.gradcam"):
            raise UploadError(501, "Grad-CAM is not available in this installation (no emorec.explain)")
        labels = state.backend.labels
        if label is not None and label not in labels:
            raise UploadError(400, f"unknown label '{label[:64]}'; choose from {', '.join(labels)}")
        uploads = await read_uploads(request, settings)
        if len(uploads) != 1:
            raise UploadError(400, f"send exactly one image to explain, got {len(uploads)}")
        name, data = uploads[0]
        loop = asyncio.get_running_loop()
        decoded = await loop.run_in_executor(state.decode_pool, decode_upload, data, name, settings.max_pixels, EXPLAIN_MAX_SIDE)
        image = decoded.image
        image.thumbnail((EXPLAIN_MAX_SIDE, EXPLAIN_MAX_SIDE))
        target = labels.index(label) if label is not None else None
        picture, index = await state.batcher.run_exclusive(state.backend.explain, image, target)
        png = io.BytesIO()
        picture.save(png, format="PNG")
        return Response(png.getvalue(), media_type="image/png", headers={"X-Emorec-Label": labels[index]})

    app.include_router(v1)
