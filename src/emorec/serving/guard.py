"""The server's edge: an ASGI guard in front of the app, and one JSON line for every error.

`GuardMiddleware` acts before any route runs: metrics for every request; 503 while draining;
a concurrency limit answered in the app's own JSON (uvicorn's `limit_concurrency` would answer
plain text); the body size limit (413 on a declared Content-Length at once, on a chunked body as
soon as it passes the limit); and one deadline for the whole body, so a client that trickles a
byte now and then cannot hold a connection longer than `body_timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from emorec.serving.batching import BatcherClosed, QueueFull
from emorec.serving.uploads import UploadError

log = logging.getLogger("emorec.serve")

ROUTES = ("/", "/health", "/ready", "/metrics", "/docs", "/openapi.json", "/v1/predict", "/v1/explain", "/v1/labels", "/v1/model")
OPERATIONS = ("/health", "/ready", "/metrics")  # always answered: load balancers and probes must see in
STATIC_PREFIXES = ("/static/", "/docs-static/")


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class GuardMiddleware:
    """Pure ASGI guard; `state` is the server's `ServerState` (settings, metrics, draining)."""

    def __init__(self, app, state):
        self.app, self.state = app, state
        self.active = 0  # requests past the guard, operations routes not counted

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else next((p.rstrip("/") for p in STATIC_PREFIXES if path.startswith(p)), "other")
        started, status = time.perf_counter(), [500]
        metrics = self.state.metrics
        metrics.in_flight.inc()
        counted = path not in OPERATIONS

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            response = self._refusal(scope, path, counted)
            if response is not None:
                await response(scope, receive, send_recording)
                return
            self.active += counted
            try:
                await self.app(scope, self._limited(receive), send_recording)
            finally:
                self.active -= counted
        finally:
            metrics.in_flight.dec()
            metrics.observe(route, scope.get("method", ""), status[0], time.perf_counter() - started)

    def _refusal(self, scope, path: str, counted: bool) -> JSONResponse | None:
        settings = self.state.settings
        if self.state.draining and path not in OPERATIONS:
            return error_response(503, "server is shutting down; retry on another instance", {"Connection": "close"})
        if counted and self.active >= settings.max_concurrency:
            return error_response(503, f"server busy: {settings.max_concurrency} requests in flight (--max-concurrency); "
                                       "retry shortly", {"Retry-After": "1"})
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return error_response(400, "Content-Length is not a number")
                if length > settings.max_upload_bytes:
                    return error_response(413, f"request body of {length:,} bytes is over the limit of "
                                               f"{settings.max_upload_mb:g} MB (--max-upload-mb)", {"Connection": "close"})
        return None

    def _limited(self, receive):
        limit, timeout = self.state.settings.max_upload_bytes, self.state.settings.body_timeout_s
        received, deadline = 0, None

        async def receive_limited():
            nonlocal received, deadline
            loop = asyncio.get_running_loop()
            if deadline is None:  # the clock starts when the app first asks for the body
                deadline = loop.time() + timeout
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
                if not message.get("more_body", False):
                    deadline = float("inf")  # the body is in; later receives wait for a disconnect
            return message

        return receive_limited


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app answers becomes `{"error": "<one line>"}` with the right status."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        if exc.status_code in (404, 405):
            return error_response(exc.status_code, f"no route {request.method} {request.url.path[:200]}; the API is described at /docs")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
        return error_response(400, f"invalid {where or 'request'}: {first.get('msg', 'bad value')}")

    @app.exception_handler(UploadError)
    async def upload_error(request, exc):
        return error_response(exc.status, str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(request, exc):
        return error_response(503, f"server busy: {exc}; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(BatcherClosed)
    async def batcher_closed(request, exc):
        return error_response(503, "server is shutting down; retry on another instance", {"Connection": "close"})

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details")
