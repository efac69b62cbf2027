"""A served model for the server tests, and a real `emorec serve` process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
LABELS = {"amusement": 0, "anger": 1, "awe": 2, "fear": 3}


def write_dataset(root: Path, per_class: int = 3, size: int = 48) -> Path:
    """ImageFolder tree with one colour per class (for a run's manifest and the parity check)."""
    rng = np.random.default_rng(0)
    for label, c in LABELS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.zeros(3)
            base[c % 3] = 200
            pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i}.jpg", quality=90)
    return root


def build_served_run(root: Path) -> Path:
    """A tiny random run (timm test_resnet, 32 px, 4 labels) with RUN/export/model.onnx."""
    import torch
    from run_factory import make_run

    from emorec.serving.export import export_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = make_run(root / "run", write_dataset(root / "data"))
        export_run(run, ("onnx",))
    finally:
        torch.set_num_threads(threads)
    return run


def jpeg_bytes(size=(64, 48), colour=(200, 30, 30), seed=0) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def live_server(model: Path, *args: str, startup_s: float = 60.0):
    """`python -m emorec serve MODEL` on a free loopback port; yields (base_url, process)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    # The log goes to a file: an undrained pipe fills up and then blocks the server on its next line.
    log = tempfile.NamedTemporaryFile("w+", prefix="emorec-serve-", suffix=".log")
    proc = subprocess.Popen([sys.executable, "-m", "emorec", "serve", str(model), "--port", str(port),
                             "--log-level", "warning", "--threads", "1", *args],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(url + "/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {startup_s} s")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def same_padded_onnx(path: Path, dynamic_size: bool = True) -> Path:
    """A small ONNX model with TensorFlow-style 'same' padding (timm's Conv2dSame, as in the tf_*
    backbones): its pad amounts are computed from the input's shape inside the graph. The batch
    axis is dynamic; height and width too unless `dynamic_size` is False (as `emorec export` does)."""
    import torch
    from timm.layers import create_conv2d

    model = torch.nn.Sequential(create_conv2d(3, 8, 3, stride=2, padding="same"), torch.nn.ReLU6(),
                                create_conv2d(8, 8, 3, stride=2, padding="same", depthwise=True), torch.nn.ReLU6(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
    axes = {0: "batch", 2: "h", 3: "w"} if dynamic_size else {0: "batch"}
    torch.onnx.export(model, (torch.randn(1, 3, 33, 33),), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": axes})
    return path
