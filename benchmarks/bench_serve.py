"""`emorec serve` under load on loopback: throughput and p50/p99 latency at concurrency 1, 8, 32.

emorec     the server with dynamic micro-batching (`--max-batch 16 --max-wait-ms 5`, the defaults).
reference  the same server with batching off (`--max-batch 1`): one forward pass per request.
Both serve tf_efficientnet_lite0 at 224 px (emorec's `build_model`, recipe head, random weights:
speed does not depend on them) exported to ONNX by `serving.export.export_onnx`, on the ONNX
Runtime backend. Each request uploads one JPEG (an Emotion6 photo when ../shared is there).
The load generator is an asyncio httpx client in this process, on the same cores as the server:
it is bounded in requests and seconds per level, sends only to 127.0.0.1, and stops by itself.

Target (issue 16): at concurrency 32, batching >= 1.5x the throughput of batching off, 0 errors.

    python benchmarks/bench_serve.py --quick
    python benchmarks/bench_serve.py --seconds 20
Last line: `serve: emorec X vs reference Y requests/s ratio=R` (concurrency 32).
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "serve"
SIZE = 224
CLASSES = 6
LEVELS = (1, 8, 32)
MAX_REQUESTS_PER_LEVEL = 5000


def build_onnx(path: Path) -> str:
    """lite0 at 224 with the recipe head, exported with emorec's exporter and serving metadata."""
    import numpy as np
    import torch

    from emorec.config import Config
    from emorec.models.classifier import build_model
    from emorec.serving.export import export_onnx
    from emorec.data.preprocess import Preprocessing

    torch.manual_seed(0)
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.weights = "tf_efficientnet_lite0", False, None
    model = build_model(cfg.model, CLASSES).eval()
    prep = Preprocessing(resize=[int(SIZE / 0.875)], crop=[SIZE, SIZE], interpolation="bicubic", mean=[0.5] * 3, std=[0.5] * 3)
    metadata = {"labels": ["anger", "disgust", "fear", "joy", "sadness", "surprise"], "preprocessing": prep.to_dict()}
    batch = np.random.default_rng(0).normal(0, 1, (4, 3, SIZE, SIZE)).astype(np.float32)
    diff = export_onnx(types.SimpleNamespace(model=model), path, batch, metadata)
    return f"emorec build_model(tf_efficientnet_lite0, recipe head) -> export_onnx (max |diff| {diff:.1e})"


def request_image() -> tuple[bytes, str]:
    dataset = C.shared_dataset("emotion6")
    if dataset is not None:
        photo = sorted((dataset / "images" / "joy").iterdir())[0]
        return photo.read_bytes(), f"{photo.name} from ../shared/datasets/emotion6"
    from PIL import Image

    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue(), "synthetic 320x256 JPEG (../shared absent)"


def multipart(data: bytes) -> tuple[bytes, str]:
    """One pre-encoded body, so the client spends its time waiting, not encoding."""
    boundary = "emorecbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def start_server(model: Path, port: int, extra: list[str], log: Path) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(C.REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "emorec", "serve", str(model), "--port", str(port), "--log-level", "warning",
                             "--max-images", "1", *extra], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-1000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server not ready after 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def load(url: str, body: bytes, content_type: str, concurrency: int, seconds: float, max_requests: int) -> dict:
    """`concurrency` clients, each sending one request after the other, for `seconds` (or the count)."""
    import httpx

    latencies, errors, sent = [], [], 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker():
            nonlocal sent
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                t = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers={"content-type": content_type})
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:100]}")
                        continue
                except Exception as e:  # noqa: BLE001 - every failure is counted as an error
                    errors.append(type(e).__name__)
                    continue
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None  # noqa: E731
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "seconds": round(elapsed, 2), "requests_per_s": len(latencies) / elapsed if elapsed else None,
            "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def forward_ceiling(model: Path, threads: int, seconds: float) -> dict:
    """Images/s of the bare ONNX Runtime session at batch 1 and 16: the most batching can give."""
    import numpy as np

    from emorec.serving.onnx_runtime import OnnxClassifier

    session = OnnxClassifier(model, threads=threads)
    out = {}
    for batch in (1, 16):
        x = np.random.default_rng(0).normal(0, 1, (batch, 3, SIZE, SIZE)).astype(np.float32)
        session.logits(x)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 2 or done == 0:
            session.logits(x)
            done += batch
        out[f"batch{batch}_images_per_s"] = done / (time.perf_counter() - started)
    out["ratio"] = out["batch16_images_per_s"] / out["batch1_images_per_s"]
    return out


def batch_sizes(url: str) -> dict:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("emorec_batch_size_images_count", "emorec_batch_size_images_sum")):
            name, value = line.split()
            values[name.rsplit("_", 1)[1]] = float(value)
    return {"forward_passes": values.get("count"), "mean_batch": values["sum"] / values["count"] if values.get("count") else None}


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--seconds", type=float, default=None, help="load per concurrency level (default: 15, quick: 3)")
    p.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 15.0)
    tmp = Path(tempfile.mkdtemp(prefix="emorec-bench-serve-"))
    C.log("exporting tf_efficientnet_lite0 at 224 to ONNX ...")
    model_src = build_onnx(tmp / "model.onnx")
    image, image_src = request_image()
    body, content_type = multipart(image)
    threads = ["--threads", str(args.threads)] if args.threads else []
    configs = {"batching": ["--max-batch", "16", "--max-wait-ms", "5"], "no batching": ["--max-batch", "1"]}
    results = {}
    for name, extra in configs.items():
        port = args.port or _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(tmp / "model.onnx", port, extra + threads, tmp / f"{name.replace(' ', '_')}.log")
        try:
            asyncio.run(load(url + "/v1/predict", body, content_type, 4, min(2.0, seconds), 50))  # warm-up
            rows = []
            for level in LEVELS:
                C.log(f"{name}: concurrency {level} for {seconds:g} s ...")
                before = batch_sizes(url)
                row = asyncio.run(load(url + "/v1/predict", body, content_type, level, seconds, MAX_REQUESTS_PER_LEVEL))
                after = batch_sizes(url)
                passes = (after["forward_passes"] or 0) - (before["forward_passes"] or 0)
                row["mean_batch"] = row["requests"] / passes if passes else None
                rows.append(row)
            results[name] = rows
        finally:
            stop_server(proc)
    print(C.table([[f"{name}, c={r['concurrency']}", r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["mean_batch"] or 0, r["errors"]]
                   for name, rows in results.items() for r in rows],
                  ["server", "req/s", "p50 ms", "p99 ms", "batch", "errors"]))
    ceiling = forward_ceiling(tmp / "model.onnx", args.threads or 0, seconds)
    print(f"bare ONNX Runtime forward: batch 1 {ceiling['batch1_images_per_s']:.1f} images/s, "
          f"batch 16 {ceiling['batch16_images_per_s']:.1f} images/s (x{ceiling['ratio']:.2f}: the most batching can give)")
    at32 = {name: next(r for r in rows if r["concurrency"] == 32) for name, rows in results.items()}
    errors = sum(r["errors"] for rows in results.values() for r in rows)
    notes = [f"loopback only; client and server share the machine's {C.usable_cores()} cores; {seconds:g} s per level",
             f"errors over all levels: {errors}"]
    C.finish(NAME, args, at32["batching"]["requests_per_s"], at32["no batching"]["requests_per_s"], "requests/s",
             {"model": model_src, "image": image_src, "image_size": SIZE, "seconds_per_level": seconds, "levels": results,
              "forward_ceiling": ceiling},
             notes=notes)
    return 0 if errors == 0 else 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    raise SystemExit(main())
