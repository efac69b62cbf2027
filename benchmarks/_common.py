"""What every performance benchmark shares: arguments, timing, machine description, results.

Each `bench_*.py` measures emorec against the plain way a user would write the same thing, on the
same machine in the same run, and ends with one headline line

    NAME: emorec X vs reference Y UNIT ratio=R

where R is emorec's speed over the reference's (larger is better). The same fields, the machine
and the details go to `benchmarks/results/NAME.json`. A piece of emorec that cannot be imported is
reported as unavailable with the reason; no number is made up for it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED = REPO.parent / "shared"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: under 2 minutes on 2 CPU cores")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median reported)")
    p.add_argument("--results", type=Path, default=RESULTS, help=f"folder for NAME.json (default: {RESULTS})")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (and ONNX Runtime); default: the library's own. On a shared, loaded "
                        "machine 1 thread avoids OpenMP threads waiting on each other (2 threads ran 14x slower "
                        "than 1 under load here)")
    return p


def apply_threads(args) -> None:
    """Set torch's intra-op threads when --threads was given (recorded in machine_info)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU, cores, library versions, the device measured on, and the load when the run started."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device,
    }
    for name in ("torchvision", "timm", "onnxruntime", "PIL"):
        try:
            info[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is just not listed
            pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def optional_import(name: str) -> tuple[Any | None, str | None]:
    """(module, None) or (None, reason): emorec pieces may not exist yet, and a benchmark then says so."""
    try:
        return importlib.import_module(name), None
    except Exception as e:  # noqa: BLE001 - any import failure means the piece is unavailable
        return None, f"{name} unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def rate(items: int, seconds: list[float]) -> dict[str, Any]:
    """Items per second from the median time (robust on a shared, loaded machine), plus the spread."""
    med = statistics.median(seconds)
    return {
        "per_s": items / med if med > 0 else float("nan"),
        "best_per_s": items / min(seconds) if min(seconds) > 0 else float("nan"),
        "median_s": med,
        "times_s": [round(s, 4) for s in seconds],
        "items": items,
    }


def ratio(emorec: float | None, reference: float | None) -> float | None:
    if emorec is None or reference is None or not reference:
        return None
    return emorec / reference


def _fmt(x: float | None) -> str:
    if x is None:
        return "unavailable"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def headline(name: str, emorec: float | None, reference: float | None, unit: str, r: float | None = None) -> str:
    r = ratio(emorec, reference) if r is None else r
    return f"{name}: emorec {_fmt(emorec)} vs reference {_fmt(reference)} {unit} ratio={'n/a' if r is None else f'{r:.2f}'}"


def finish(name: str, args, emorec: float | None, reference: float | None, unit: str, details: dict[str, Any],
           device: str = "cpu", r: float | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """Write `results/NAME.json` and print the headline as the last line; returns the record."""
    r = ratio(emorec, reference) if r is None else r
    record = {
        "name": name,
        "emorec": emorec,
        "reference": reference,
        "unit": unit,
        "ratio": r,
        "quick": bool(getattr(args, "quick", False)),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(device),
        "notes": notes or [],
        "details": details,
    }
    out_dir = Path(getattr(args, "results", RESULTS))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(path)
    for note in notes or []:
        print(f"note: {note}")
    print(f"results: {path}")
    print(headline(name, emorec, reference, unit, r), flush=True)
    return record


def table(rows: list[list[Any]], header: list[str]) -> str:
    """Plain aligned text table for the console."""
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else _fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in cells)


def shared_dataset(name: str) -> Path | None:
    """../shared/datasets/NAME when present (it is read-only input, never copied into the repo)."""
    path = SHARED / "datasets" / name
    return path if path.is_dir() else None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class CachedSplit:
    """One split of a feature cache to write: sample paths, label indices and (N, V, C) vectors,
    one per sample and view (`views` names them, "center" first as extraction writes them)."""

    paths: list[str]
    labels: Any  # (N,) ints
    pooled: Any  # (N, V, C) array
    views: list[str]
    valid: Any = None  # (N,) bools; None: every sample readable


def write_feature_cache(cache_dir: str | Path, spec: dict[str, Any], stats: dict[str, Any], label_names: list[str],
                        splits: dict[str, CachedSplit]):
    """A `FeatureCache` entry under `cache_dir`, written with emorec's own `CacheWriter` from
    arrays in memory (synthetic features, or one fold's rows of an extracted cache), for
    `emorec.api.train` with `train.head_only` and `train.features_dir` set to the returned
    cache's root. `spec` must name `backbone` and `image_size` (the run adopts them), `stats` the
    `weights_path` and `pretrained` the run's backbone is built with. Every path must exist:
    the trainer reads the cache's manifest.csv like any other."""
    import hashlib

    import numpy as np

    from emorec.features.cache import CacheWriter, cache_key

    rows = [(str(p), label_names[int(y)], name) for name, s in splits.items() for p, y in zip(s.paths, s.labels)]
    dtype = spec.get("dtype", "float16")
    # The rows and their views name the entry; the spec alone would give every fold one key.
    digest = hashlib.sha256(repr([rows, {n: s.views for n, s in splits.items()}]).encode()).hexdigest()
    spec = {**spec, "dtype": dtype, "grid": 0, "labels": list(label_names), "manifest": digest}
    key = cache_key(spec)
    writer = CacheWriter(Path(cache_dir) / key, key, spec, label_names)
    for name, s in splits.items():
        pooled = np.asarray(s.pooled)
        arrays = writer.add_split(name, [str(p) for p in s.paths], [int(y) for y in s.labels], s.views,
                                  pooled.shape[2], 0, dtype)
        arrays["pooled"][:] = pooled.astype(dtype)
        arrays["valid"][:] = True if s.valid is None else np.asarray(s.valid, dtype=bool)
    return writer.finish(rows, {"channels": int(np.asarray(next(iter(splits.values())).pooled).shape[2]), **stats})


@contextmanager
def trainer_output_to(path: str | Path):
    """Send what a training run prints (its log lines and progress bars, on stderr) to `path`,
    so a benchmark of many runs keeps its own lines readable; train.log in each run directory
    keeps the log either way. When the run fails, the log's last lines are shown."""
    try:
        with open(path, "a", encoding="utf-8") as f, redirect_stderr(f):
            yield
    except BaseException:
        tail = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        print("\n".join([f"last lines of {path}:", *tail]), file=sys.stderr, flush=True)
        raise
