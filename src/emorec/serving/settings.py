"""What `emorec serve` is told: one settings object, checked once before anything is loaded."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from emorec.errors import EmorecError
from emorec.faces.detect import DETECT_SIZE
from emorec.serving.uploads import DEFAULT_MAX_PIXELS

API_KEY_ENV = "EMOREC_API_KEY"


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
    max_concurrency: int = 256  # /v1 and page requests in flight at once before new ones get 503
    body_timeout_s: float = 30.0  # the whole upload must arrive within this, or 408
    graceful_timeout_s: float = 30.0
    decode_threads: int = 2  # also the number of photos held decoded at once with faces=true
    device: str = "cpu"
    threads: int = 0  # onnxruntime intra-op threads; 0 = its default (all cores)
    face_detector: str = "mtcnn"
    face_detect_size: int = DETECT_SIZE  # shorter side the face detector sees at most
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
    for name in ("max_upload_mb", "max_pixels", "max_images", "max_batch", "workers", "max_queue", "max_concurrency",
                 "decode_threads", "body_timeout_s", "face_detect_size"):
        if getattr(settings, name) <= 0:
            raise EmorecError(f"--{name.replace('_', '-')} must be positive, got {getattr(settings, name)}")
    if settings.max_wait_ms < 0:
        raise EmorecError(f"--max-wait-ms must be >= 0, got {settings.max_wait_ms}")
    if settings.max_images > settings.max_queue:
        raise EmorecError(f"--max-images {settings.max_images} is over --max-queue {settings.max_queue}: a full request "
                          "could never be queued; raise --max-queue or lower --max-images")
