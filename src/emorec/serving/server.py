"""`emorec serve`: an HTTP API and a web page for a trained model (FastAPI on uvicorn).

Routes (OpenAPI at /docs):
  POST /v1/predict   multipart field `image` (repeatable); query `top_k`, `faces`
  POST /v1/explain   one `image`; query `label`; Grad-CAM overlay as PNG (torch backend)
  GET  /v1/labels, /v1/model     the label names; what this server can do
  GET  /health, /ready, /metrics liveness; model loaded and not draining; Prometheus text
  GET  /                         the web page (plain HTML + JS from the package, no CDN)

Safe to expose: binds to loopback unless an API key guards /v1; request bodies over
`max_upload_mb` get 413 before they are read; every upload is checked by `uploads.decode_upload`
(format allow-list, pixel limit from the header); every error, whatever raised it, is one line of
JSON `{"error": ...}`; the server reads no path and fetches no URL a client names: images are
only ever the bytes of the request.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import ipaddress
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from emorec.errors import EmorecError
from emorec.serving.batching import MicroBatcher, QueueFull
from emorec.serving.server_metrics import ServerMetrics
from emorec.serving.uploads import DEFAULT_MAX_PIXELS, UploadError, check_content_type, decode_upload

log = logging.getLogger("emorec.serve")

WEB_DIR = Path(__file__).resolve().parent / "web"
API_KEY_ENV = "EMOREC_API_KEY"
SETTINGS_ENV = "EMOREC_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker process
EXPLAIN_MAX_SIDE = 1024  # Grad-CAM runs on a display-sized copy: the page shows no more than this
ROUTES = ("/", "/health", "/ready", "/metrics", "/docs", "/openapi.json", "/v1/predict", "/v1/explain", "/v1/labels", "/v1/model")
# The page loads only its own files; images are shown from blob: URLs made in the browser.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class ServeSettings:
    model: str
    backend: str = "onnx"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    api_key: str | None = field(default=None, repr=False)
    max_upload_mb: float = 10.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = 16  # per request
    max_batch: int = 16  # images per forward pass; 1 turns micro-batching off
    max_wait_ms: float = 5.0
    max_queue: int = 512  # images waiting for the model before new requests get 503
    max_connections: int = 256
    body_timeout_s: float = 30.0  # a client that stops sending its upload gets 408
    graceful_timeout_s: float = 30.0
    decode_threads: int = 2
    device: str = "cpu"
    threads: int = 0  # onnxruntime intra-op threads; 0 = its default (all cores)
    face_detector: str = "mtcnn"
    log_level: str = "info"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(settings: ServeSettings) -> None:
    """Refuse settings that would expose an unguarded model, or make no sense."""
    if not is_loopback(settings.host) and not settings.api_key:
        raise EmorecError(
            f"--host {settings.host} exposes the server beyond this machine; set --api-key KEY (or the "
            f"{API_KEY_ENV} environment variable) so /v1 routes need it, or bind to 127.0.0.1"
        )
    for name in ("max_upload_mb", "max_pixels", "max_images", "max_batch", "workers", "max_queue", "decode_threads"):
        if getattr(settings, name) <= 0:
            raise EmorecError(f"--{name.replace('_', '-')} must be positive, got {getattr(settings, name)}")
    if settings.max_wait_ms < 0:
        raise EmorecError(f"--max-wait-ms must be >= 0, got {settings.max_wait_ms}")


class ServerState:
    """What the routes share: the model, the batcher, the pools, the metrics, the life cycle."""

    def __init__(self, settings: ServeSettings, backend=None):
        self.settings = settings
        self.backend = backend
        self.batcher: MicroBatcher | None = None
        self.decode_pool = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="emorec-decode")
        self.metrics = ServerMetrics()
        self.ready = False
        self.draining = False
        self._detector = None
        self._detector_lock = threading.Lock()

    def detector(self):
        with self._detector_lock:
            if self._detector is None:
                from emorec.faces.detect import create_detector

                self._detector = create_detector(self.settings.face_detector, self.settings.device)
            return self._detector


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


class GuardMiddleware:
    """Pure ASGI: metrics for every request, draining, and the body size and time limits.

    The size limit acts before the app reads a byte: a declared Content-Length over it is answered
    413 at once, and a chunked body is cut off as soon as it passes the limit.
    """

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "/static" if path.startswith("/static/") else "other"
        started, status = time.perf_counter(), [500]
        metrics = self.state.metrics
        metrics.in_flight.inc()

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            response = self._refusal(scope, path)
            if response is not None:
                await response(scope, receive, send_recording)
            else:
                await self.app(scope, self._limited(receive), send_recording)
        finally:
            metrics.in_flight.dec()
            metrics.observe(route, scope.get("method", ""), status[0], time.perf_counter() - started)

    def _refusal(self, scope, path: str) -> JSONResponse | None:
        settings = self.state.settings
        if self.state.draining and path not in ("/health", "/ready", "/metrics"):
            return _error(503, "server is shutting down; retry on another instance", {"Connection": "close"})
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return _error(400, "Content-Length is not a number")
                if length > settings.max_upload_bytes:
                    return _error(413, f"request body of {length:,} bytes is over the limit of {settings.max_upload_mb:g} MB "
                                       "(--max-upload-mb)", {"Connection": "close"})
        return None

    def _limited(self, receive):
        limit, timeout = self.state.settings.max_upload_bytes, self.state.settings.body_timeout_s
        received = 0

        async def receive_limited():
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise _BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        return receive_limited


def _install_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        if exc.status_code in (404, 405):
            return _error(exc.status_code, f"no route {request.method} {request.url.path[:200]}; the API is described at /docs")
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        return _error(400, f"invalid {where or 'request'}: {first.get('msg', 'bad value')}")

    @app.exception_handler(UploadError)
    async def upload_error(request, exc):
        return _error(exc.status, str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(request, exc):
        return _error(503, f"server busy: {exc}; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")


def _require_key(state: ServerState):
    key = state.settings.api_key

    async def require_key(request: Request) -> None:
        if not key:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise StarletteHTTPException(401, "missing or wrong API key; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                         headers={"WWW-Authenticate": "Bearer"})

    return require_key


async def _read_uploads(request: Request, state: ServerState) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every `image` part; the form's temporary files are closed here."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UploadError(415, f"content type '{content_type.split(';')[0] or 'none'}' is not multipart/form-data; "
                               "send the image as multipart field 'image'")
    try:
        form = await request.form(max_files=state.settings.max_images, max_fields=32)
    except _BodyTooLarge:
        raise UploadError(413, f"request body is over the limit of {state.settings.max_upload_mb:g} MB (--max-upload-mb)") from None
    except _BodyTimeout:
        raise UploadError(408, f"the upload stalled for {state.settings.body_timeout_s:g} s") from None
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


def _top_k(probs: np.ndarray, labels: list[str], k: int) -> list[dict]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": labels[i], "probability": round(float(probs[i]), 6)} for i in order]


class _BatchedPredictor:
    """`predict_images` + `labels` for the face pipeline, routed through the micro-batcher."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop):
        self.state, self.loop, self.labels = state, loop, state.backend.labels

    def predict_images(self, images: list) -> np.ndarray:
        if not images:
            return np.zeros((0, len(self.labels)))
        arrays = np.stack([self.state.backend.prepare(im) for im in images])
        return asyncio.run_coroutine_threadsafe(self.state.batcher.submit(arrays), self.loop).result()


def _faces_module():
    try:
        from emorec.faces import predict as faces_predict
    except ImportError as e:
        raise UploadError(501, f"face detection is not available in this installation ({e}); predict without faces=true") from None
    return faces_predict


def _build_routes(app: FastAPI, state: ServerState) -> None:
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_require_key(state))], tags=["model"])
    multipart_body = {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["image"],
                "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"},
                                         "description": "one or more image files (JPEG, PNG, WebP, BMP, GIF, TIFF)"}},
            }}},
        }
    }

    def require_ready() -> None:
        if not state.ready:
            raise UploadError(503, "model is not loaded yet; retry when /ready answers 200")

    def decode_and_prepare(name: str, data: bytes, keep_image: bool):
        image = decode_upload(data, name, state.settings.max_pixels, state.backend.min_size)
        return (image if keep_image else None), state.backend.prepare(image)

    @app.get("/health", tags=["operations"])
    async def health():
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"])
    async def ready():
        """Readiness: the model is loaded and the server is not shutting down."""
        if state.draining:
            return _error(503, "shutting down")
        if not state.ready:
            return _error(503, "model loading")
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
            "labels": state.backend.labels,
            "faces": _module_available("emorec.faces.predict"),
            "explain": state.backend.can_explain and _module_available("emorec.explain.gradcam"),
            "max_images": state.settings.max_images,
            "max_upload_mb": state.settings.max_upload_mb,
        }

    @v1.post("/predict", openapi_extra=multipart_body)
    async def predict(request: Request, top_k: int = Query(3, ge=1, le=1000, description="labels per image"),
                      faces: bool = Query(False, description="also find faces and label each one (face models)")):
        """Top-k emotions for each uploaded image (and for each face in it with faces=true)."""
        require_ready()
        faces_predict = _faces_module() if faces else None
        uploads = await _read_uploads(request, state)
        loop = asyncio.get_running_loop()
        names = [name for name, _ in uploads]
        decoded = await asyncio.gather(*(loop.run_in_executor(state.decode_pool, decode_and_prepare, name, data, faces)
                                         for name, data in uploads))
        del uploads
        probs = await state.batcher.submit(np.stack([array for _, array in decoded]))
        k = min(top_k, len(state.backend.labels))
        predictions = [{"filename": name, "top_k": _top_k(p, state.backend.labels, k)} for name, p in zip(names, probs)]
        if faces_predict is not None:
            detector = await loop.run_in_executor(state.decode_pool, state.detector)
            predictor = _BatchedPredictor(state, loop)
            for prediction, (image, _) in zip(predictions, decoded):
                found = await loop.run_in_executor(state.decode_pool, faces_predict.predict_faces, predictor, image, detector, k)
                prediction["faces"] = [_face_json(f) for f in found]
        return {"predictions": predictions}

    @v1.post("/explain", openapi_extra=multipart_body, response_class=Response,
             responses={200: {"content": {"image/png": {}}, "description": "the photo with the Grad-CAM heat map over it"}})
    async def explain(request: Request, label: str | None = Query(None, description="label to explain (default: the top one)")):
        """Grad-CAM overlay as PNG: where the model looked for `label`. Torch backend only."""
        require_ready()
        if not state.backend.can_explain:
            raise UploadError(400, f"explanations need the torch backend (this server runs {state.backend.name}); "
                                   "start it with --backend torch and a run directory")
        if not _module_available("emorec.explain.gradcam"):
            raise UploadError(501, "Grad-CAM is not available in this installation (no emorec.explain)")
        labels = state.backend.labels
        if label is not None and label not in labels:
            raise UploadError(400, f"unknown label '{label[:64]}'; choose from {', '.join(labels)}")
        uploads = await _read_uploads(request, state)
        if len(uploads) != 1:
            raise UploadError(400, f"send exactly one image to explain, got {len(uploads)}")
        name, data = uploads[0]
        loop = asyncio.get_running_loop()
        image = await loop.run_in_executor(state.decode_pool, decode_upload, data, name, state.settings.max_pixels, None)
        image.thumbnail((EXPLAIN_MAX_SIDE, EXPLAIN_MAX_SIDE))
        target = labels.index(label) if label is not None else None
        picture, index = await state.batcher.run_exclusive(state.backend.explain, image, target)
        png = io.BytesIO()
        picture.save(png, format="PNG")
        return Response(png.getvalue(), media_type="image/png", headers={"X-Emorec-Label": labels[index]})

    app.include_router(v1)


def _face_json(face: dict) -> dict:
    out = dict(face)
    out["box"] = [round(float(v), 1) for v in face["box"]]
    if "det_score" in out:
        out["det_score"] = round(float(out["det_score"]), 4)
    out["top_k"] = [{"label": t["label"], "probability": round(float(t["probability"]), 6)} for t in face["top_k"]]
    return out


def _module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package is missing
        return False


def create_app(settings: ServeSettings, backend=None) -> FastAPI:
    """The ASGI app. `backend` (from `backend.open_backend`) is loaded at startup when not given."""
    state = ServerState(settings, backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.backend is None:
            from emorec.serving.backend import open_backend

            state.backend = await asyncio.to_thread(open_backend, settings.model, settings.backend, settings.device, settings.threads)
        state.batcher = MicroBatcher(state.backend.forward, settings.max_batch, settings.max_wait_ms, settings.max_queue,
                                     on_batch=state.metrics.observe_batch)
        await state.batcher.start()
        state.ready = True
        log.info("serving %s (%s backend, %d labels)", settings.model, state.backend.name, len(state.backend.labels))
        try:
            yield
        finally:
            # uvicorn calls this after in-flight requests have finished (or the graceful timeout).
            state.ready, state.draining = False, True
            await state.batcher.stop()
            state.decode_pool.shutdown(wait=True)

    from emorec import __version__

    app = FastAPI(title="emorec", version=__version__, lifespan=lifespan,
                  description="Image emotion recognition. Send images as multipart field `image` to `/v1/predict`; "
                              "errors are `{\"error\": \"<one line>\"}`.")
    app.state.emorec = state
    _install_error_handlers(app, state)
    _build_routes(app, state)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(GuardMiddleware, state=state)
    return app


def app_from_environment() -> FastAPI:
    """uvicorn factory for `--workers N`: each worker process rebuilds the app from the settings
    the `emorec serve` process left in SETTINGS_ENV (worker processes share no Python objects)."""
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the app as draining the moment SIGTERM or SIGINT arrives: /ready
    turns 503 and new requests on open connections are refused while uvicorn finishes the ones
    in flight (it has already stopped accepting connections)."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig, frame) -> None:
        self.state.draining = True
        super().handle_exit(sig, frame)


def serve(settings: ServeSettings, backend=None) -> None:
    """Run the server until SIGTERM / Ctrl-C: new connections are refused, in-flight requests finish."""
    check_settings(settings)
    common = dict(host=settings.host, port=settings.port, log_level=settings.log_level, limit_concurrency=settings.max_connections,
                  timeout_keep_alive=5, timeout_graceful_shutdown=settings.graceful_timeout_s, server_header=False)
    if settings.workers > 1:
        import shutil
        import tempfile

        os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
        metrics_dir = None if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else tempfile.mkdtemp(prefix="emorec-metrics-")
        if metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            uvicorn.run("emorec.serving.server:app_from_environment", factory=True, workers=settings.workers, **common)
        finally:
            if metrics_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        return
    app = create_app(settings, backend)
    DrainingServer(uvicorn.Config(app, **common), app.state.emorec).run()
