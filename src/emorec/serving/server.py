"""`emorec serve`: an HTTP API and a web page for a trained model (FastAPI on uvicorn).

Routes (OpenAPI at /docs, whose Swagger UI files the server serves itself):
  POST /v1/predict   multipart field `image` (repeatable); query `top_k`, `faces`
  POST /v1/explain   one `image`; query `label`; Grad-CAM overlay as PNG (torch backend)
  GET  /v1/labels, /v1/model     the label names; what this server can do
  GET  /health, /ready, /metrics liveness; model loaded and not draining; Prometheus text
  GET  /                         the web page (plain HTML + JS from the package, no CDN)

Safe to expose: binds to loopback unless an API key guards /v1; request bodies over
`max_upload_mb` get 413 before they are read, and the whole body must arrive within
`body_timeout_s`; every upload is checked by `uploads.decode_upload` (format allow-list, pixel
limit from the header); every error, whatever raised it, is one line of JSON `{"error": ...}`;
the server reads no path and fetches no URL a client names: images are only ever the bytes of
the request.

This module holds the life cycle: the shared state, the app and its start-up and shutdown, and
the runner for one or several worker processes. The edge is `guard.py`, the routes `routes.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from emorec.errors import EmorecError
from emorec.serving.batching import MicroBatcher
from emorec.serving.guard import GuardMiddleware, install_error_handlers
from emorec.serving.routes import build_routes, module_available
from emorec.serving.server_metrics import ServerMetrics
from emorec.serving.settings import API_KEY_ENV, ServeSettings, check_settings
from emorec.serving.uploads import UploadError

log = logging.getLogger("emorec.serve")

WEB_DIR = Path(__file__).resolve().parent / "web"
DOCS_STATIC = "/docs-static"
# The page loads only its own files; images are shown from blob: URLs made in the browser.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

__all__ = ["API_KEY_ENV", "ServeSettings", "ServerState", "check_settings", "create_app", "serve"]


class ServerState:
    """What the routes share: the model, the batcher, the pools, the metrics, the life cycle."""

    def __init__(self, settings: ServeSettings, backend=None):
        self.settings = settings
        self.backend = backend
        self.batcher: MicroBatcher | None = None
        self.decode_pool = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="emorec-decode")
        # Face detection gets a thread of its own: a slow detection must not stall every decode.
        self.face_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emorec-faces")
        self.face_slots = asyncio.Semaphore(settings.decode_threads)
        self.metrics = ServerMetrics()
        self.ready = False
        self.draining = False
        self._detector = None
        self._detector_lock = threading.Lock()

    def faces_missing(self) -> str | None:
        """Why faces=true cannot be served here, or None when it can."""
        if self._detector is not None:
            return None
        if not module_available("emorec.faces.predict"):
            return "no emorec.faces in this installation"
        from emorec.faces.detect import detector_missing

        return detector_missing(self.settings.face_detector)

    def detector(self):
        with self._detector_lock:
            if self._detector is None:
                from emorec.faces.detect import create_detector

                try:
                    self._detector = create_detector(self.settings.face_detector, self.settings.device)
                except EmorecError as e:  # installed but unusable (e.g. an OpenCV without cascades): 501 too
                    raise UploadError(501, f"face detection is not available on this server ({e}); "
                                           "predict without faces=true") from None
            return self._detector

    def shut_down_pools(self) -> None:
        # No waiting: a decode or detection in progress finishes on its own; queued ones are dropped.
        for pool in (self.decode_pool, self.face_pool):
            pool.shutdown(wait=False, cancel_futures=True)


def _serve_docs_offline(app: FastAPI) -> None:
    """/docs with Swagger UI's JavaScript and CSS served from the fastapi-offline package, so the
    page works on a machine without internet and loads nothing from a CDN (FastAPI documents this
    self-hosting; the files come from the package, not copied into this repository)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi_offline.core import _STATIC_PATH

    app.mount(DOCS_STATIC, StaticFiles(directory=_STATIC_PATH), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_STATIC}/favicon.png")


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
        _drain_on_exit_signals(state)
        state.ready = True
        log.info("serving %s (%s backend, %s, %d labels)", settings.model, state.backend.name,
                 getattr(state.backend, "precision", "fp32"), len(state.backend.labels))
        try:
            yield
        finally:
            # uvicorn calls this after in-flight requests have finished (or the graceful timeout).
            state.ready, state.draining = False, True
            await state.batcher.stop(timeout=settings.graceful_timeout_s)
            state.shut_down_pools()

    from emorec import __version__

    app = FastAPI(title="emorec", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Image emotion recognition. Send images as multipart field `image` to `/v1/predict`; "
                              "errors are `{\"error\": \"<one line>\"}`.")
    app.state.emorec = state
    install_error_handlers(app)
    build_routes(app, state)
    _serve_docs_offline(app)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(GuardMiddleware, state=state)
    return app


@dataclass
class WorkerApp:
    """uvicorn app factory for `--workers N`. Each worker process gets this object pickled over
    the spawn pipe and builds its own app from the settings in it: the settings (the API key
    among them) never pass through environment variables, where every child process would see them."""

    settings: ServeSettings

    def __call__(self) -> FastAPI:
        return create_app(self.settings)


def _drain_on_exit_signals(state: ServerState) -> None:
    """Mark the app as draining the moment SIGTERM or SIGINT arrives, then let uvicorn's own handler
    run: /ready turns 503 and new requests on open connections are refused while uvicorn finishes
    the ones in flight. Installed from the lifespan, so every worker process does it too; signal
    handlers can only be set from the main thread (not under a test client's thread)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            state.draining = True
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def serve(settings: ServeSettings, backend=None) -> None:
    """Run the server until SIGTERM / Ctrl-C: new connections are refused, in-flight requests finish."""
    check_settings(settings)
    # No limit_concurrency here: GuardMiddleware answers the concurrency limit in the API's JSON.
    common = dict(host=settings.host, port=settings.port, log_level=settings.log_level, timeout_keep_alive=5,
                  timeout_graceful_shutdown=settings.graceful_timeout_s, server_header=False)
    if settings.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(settings, backend), **common)).run()
        return
    import shutil
    import tempfile

    from uvicorn.supervisors import Multiprocess

    if backend is not None:
        raise EmorecError("--workers > 1 loads the model in each worker; do not pass a loaded backend")
    # Worker processes inherit this environment: they get the key from the pickled settings only.
    os.environ.pop(API_KEY_ENV, None)
    metrics_dir = None if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else tempfile.mkdtemp(prefix="emorec-metrics-")
    if metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        config = uvicorn.Config(WorkerApp(settings), factory=True, workers=settings.workers, **common)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
