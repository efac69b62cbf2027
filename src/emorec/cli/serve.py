"""CLI: `emorec serve` (HTTP API and web page for a model)."""

from __future__ import annotations


def register(sub) -> None:
    from emorec.faces.detect import DETECT_SIZE, DETECTORS
    from emorec.serving.uploads import DEFAULT_MAX_PIXELS

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: JSON API, web page, metrics",
        description="MODEL: exported .onnx file, run directory, .pt checkpoint or a built-in model's name (`emorec models`). The default backend is ONNX Runtime "
                    "(no torch); a run directory without RUN_DIR/export/model.onnx is exported first. "
                    "Page at /, API docs at /docs, Prometheus metrics at /metrics.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; any other needs --api-key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model (default: 1)")
    p.add_argument("--backend", choices=["onnx", "torch"], default="onnx",
                   help="onnx (default, torch-free) or torch (a run directory; needed for /v1/explain)")
    p.add_argument("--api-key", default=None,
                   help="key every /v1 route requires ('Authorization: Bearer KEY'); default: $EMOREC_API_KEY")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body (default: 10)")
    p.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                   help=f"largest image, read from its header before decoding (default: {DEFAULT_MAX_PIXELS / 1e6:g})")
    p.add_argument("--max-images", type=int, default=16, help="images per request (default: 16)")
    p.add_argument("--max-batch", type=int, default=16, help="images per forward pass; 1 turns micro-batching off (default: 16)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests (default: 5)")
    p.add_argument("--max-queue", type=int, default=512, help="images waiting for the model before requests get 503 (default: 512)")
    p.add_argument("--max-concurrency", type=int, default=256,
                   help="requests in flight at once before new ones get 503 with Retry-After (default: 256)")
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds the whole upload may take to arrive before 408 (default: 30)")
    p.add_argument("--decode-threads", type=int, default=2,
                   help="threads decoding uploads; with faces=true also the photos held decoded at once (default: 2)")
    p.add_argument("--detector", default="mtcnn", choices=sorted(DETECTORS), help="face detector for faces=true (default: mtcnn)")
    p.add_argument("--face-detect-size", type=int, default=DETECT_SIZE,
                   help=f"shorter side, in px, the face detector sees at most; boxes are still in the photo's pixels (default: {DETECT_SIZE})")
    p.add_argument("--fp32", action="store_true",
                   help="onnx backend, for a run with an INT8 model (emorec export --quantize int8): serve model.onnx instead")
    p.add_argument("--device", default="cpu", help="torch backend: cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per forward pass (default: all cores)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    import os
    import sys

    from emorec.serving.backend import onnx_path_for, open_backend
    from emorec.serving.server import API_KEY_ENV, ServeSettings, check_settings, serve

    model = args.model
    settings = ServeSettings(
        model=model, backend=args.backend, host=args.host, port=args.port, workers=args.workers,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, max_upload_mb=args.max_upload_mb,
        max_pixels=int(args.max_megapixels * 1e6), max_images=args.max_images, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_concurrency=args.max_concurrency,
        body_timeout_s=args.body_timeout, decode_threads=args.decode_threads, face_detector=args.detector,
        face_detect_size=args.face_detect_size, device=args.device, threads=args.threads, log_level=args.log_level,
    )
    check_settings(settings)  # before loading anything: a refused --host should fail at once
    if settings.backend == "onnx":
        settings.model = str(onnx_path_for(model, int8=not args.fp32))  # exports a run once; workers then load the file
    # Load here so a bad model is a one-line error before the port opens; workers load their own.
    backend = open_backend(settings.model, settings.backend, settings.device, settings.threads) if settings.workers == 1 else None
    print(f"model: {backend.description if backend else settings.model}", file=sys.stderr)
    serve(settings, backend)
    return 0
