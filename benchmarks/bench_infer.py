"""Inference speed on CPU, in images/s, at batch 1 and batch 32 (224 px, synthetic input).

emorec     the served path: the model exported by `serving.export.export_onnx` (opset 17, dynamic
           batch, parity-checked against PyTorch) and run by `serving.onnx_runtime.OnnxClassifier`
           (ONNX Runtime, CPU provider).
reference  PyTorch eager under `torch.inference_mode()`.
int8       the same ONNX model after `serving.quantize.quantize_model` (ONNX Runtime static
           quantization, QDQ, per-channel; calibrated on the benchmark's inputs: speed does not
           depend on the calibration), run by the same OnnxClassifier (issue 24: >= 1.5x fp32 ONNX
           Runtime). Its accuracy is checked by `emorec export --quantize int8`, not here.
Also       `torch.compile` (inductor) of the same model, where it works on this machine; when it
           fails or exceeds its time budget it is reported as unavailable with the reason.
The model is emorec's `build_model` of the recipe head on tf_efficientnet_lite0 (pretrained=False:
speed does not depend on the weights); while `emorec.models` is missing, a plain timm model with
the same backbone (stated in the output).

Target (issue 8): ONNX Runtime >= 1.3x eager at batch 32 on CPU.

    python benchmarks/bench_infer.py --quick
    python benchmarks/bench_infer.py --backbone resnet18 --no-compile
Last line: `infer: emorec X vs reference Y images/s ratio=R` (ONNX Runtime vs eager, batch 32).
"""

from __future__ import annotations

import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "infer"
CLASSES = 7
SIZE = 224
BATCHES = (1, 16, 32)


def build(backbone: str):
    """(model in eval mode, what it is): emorec's classifier when available, else bare timm."""
    import torch

    torch.manual_seed(0)
    mod, why = C.optional_import("emorec.models")
    if mod is not None and hasattr(mod, "build_model"):
        from emorec.config import Config

        cfg = Config()
        cfg.model.backbone, cfg.model.pretrained, cfg.model.weights = backbone, False, None
        return mod.build_model(cfg.model, CLASSES).eval(), f"emorec build_model({backbone}, recipe head)"
    import timm

    why = why or "emorec.models.build_model unavailable (not exported yet)"
    return timm.create_model(backbone, pretrained=False, num_classes=CLASSES).eval(), f"timm {backbone} ({why})"


def export(model, path: Path, batch, threads: int = 0) -> tuple[object, str]:
    """(callable numpy -> logits, how it was exported): emorec's exporter and runtime when present."""
    mod, why = C.optional_import("emorec.serving.export")
    if mod is not None:
        from emorec.serving.onnx_runtime import OnnxClassifier
        from emorec.data.preprocess import Preprocessing

        prep = Preprocessing(resize=[int(SIZE / 0.875)], crop=[SIZE, SIZE], interpolation="bilinear",
                             mean=[0.5] * 3, std=[0.5] * 3)
        metadata = {"labels": [f"class{i}" for i in range(CLASSES)], "preprocessing": prep.to_dict()}
        diff = mod.export_onnx(types.SimpleNamespace(model=model), path, batch[:8], metadata)
        return OnnxClassifier(path, threads=threads).logits, f"emorec serving.export.export_onnx + OnnxClassifier (max |diff| {diff:.1e})"
    import onnxruntime as ort
    import torch

    torch.onnx.export(model, (torch.from_numpy(batch[:2]),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return (lambda x: session.run(None, {"image": x})[0]), f"torch.onnx.export + onnxruntime ({why})"


def quantized(fp32_path: Path, batch, threads: int = 0) -> dict:
    """{"available": True, "logits": callable, "quantize_s": ...} for the INT8 model of `fp32_path`,
    or {"available": False, "reason": ...} where emorec's quantizer is missing or fails."""
    mod, why = C.optional_import("emorec.serving.quantize")
    if mod is None:
        return {"available": False, "reason": why}
    from emorec.serving.onnx_runtime import OnnxClassifier

    path = fp32_path.with_name("model.int8.onnx")
    t = time.perf_counter()
    try:
        mod.quantize_model(fp32_path, path, batch)
    except Exception as e:  # noqa: BLE001 - reported as unavailable, with why
        return {"available": False, "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    return {"available": True, "logits": OnnxClassifier(path, threads=threads).logits, "quantize_s": time.perf_counter() - t,
            "calibration": f"{len(batch)} benchmark inputs"}


class CompileTimeout(Exception):
    pass


def compiled(model, batch, budget_s: float):
    """(callable, compile seconds, None) or (None, None, reason). Compiles for both batch sizes.

    Inductor on a small CPU can take minutes (its C++ compiler runs per kernel); an alarm stops the
    attempt at `budget_s` so a quick run stays quick. Compiled kernels are cached on disk
    (/tmp/torchinductor_*), so a second run compiles much faster.
    """
    import signal

    import torch

    def on_alarm(signum, frame):
        raise CompileTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm) if hasattr(signal, "SIGALRM") else None
    if previous is not None:
        signal.alarm(max(1, int(budget_s)))
    t = time.perf_counter()
    try:
        fn = torch.compile(model, dynamic=False)
        with torch.inference_mode():
            for b in BATCHES:
                fn(torch.from_numpy(batch[:b]))
        return fn, time.perf_counter() - t, None
    except Exception as e:  # noqa: BLE001 - any compiler failure means "unavailable here", with why
        torch._dynamo.reset()
        # Inductor wraps the alarm's exception in its own error type; the name survives in the text.
        if isinstance(e, CompileTimeout) or "CompileTimeout" in f"{type(e).__name__}: {e}":
            return None, None, f"compiling took over its {budget_s:.0f} s budget on this machine (raise --compile-budget)"
        return None, None, f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        if previous is not None:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def build_parser():
    p = C.parser(__doc__)
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm backbone (default: tf_efficientnet_lite0)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on small machines)")
    p.add_argument("--compile-budget", type=float, default=None, help="seconds allowed for compiling (default 70 quick, 600)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch

    C.apply_threads(args)

    repeats = args.repeats or (5 if args.quick else 11)
    iters = {1: 8 if args.quick else 32, 16: 1 if args.quick else 4, 32: 1 if args.quick else 3}  # calls per timed repeat
    batch = np.random.default_rng(0).standard_normal((max(BATCHES), 3, SIZE, SIZE)).astype(np.float32)
    model, model_src = build(args.backbone)
    C.log(f"model: {model_src}")

    tmp = Path(tempfile.mkdtemp(prefix="emorec_bench_infer_"))
    ort_fn, ort_src = export(model, tmp / "model.onnx", batch, args.threads or 0)
    C.log(f"onnx: {ort_src}")

    def eager(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    runners = {"eager": eager, "onnxruntime": ort_fn}
    int8_info = quantized(tmp / "model.onnx", batch, args.threads or 0)
    if int8_info.get("available"):
        runners["onnxruntime-int8"] = int8_info.pop("logits")
    C.log(f"int8: {int8_info}")
    compile_info: dict = {"available": False}
    if args.no_compile:
        compile_info["reason"] = "skipped (--no-compile)"
    else:
        budget = args.compile_budget or (70.0 if args.quick else 600.0)
        fn, secs, why = compiled(model, batch, budget)
        if fn is None:
            compile_info["reason"] = why
        else:
            compile_info = {"available": True, "compile_s": secs}

            def run_compiled(x, fn=fn):
                with torch.inference_mode():
                    return fn(torch.from_numpy(x))

            runners["torch.compile"] = run_compiled
        C.log(f"torch.compile: {compile_info}")

    results: dict[str, dict] = {}
    for b in BATCHES:
        x = np.ascontiguousarray(batch[:b])
        for fn in runners.values():  # warm-up: allocator, thread pools, oneDNN primitives
            fn(x)
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(repeats):  # round-robin, so load from other users hits every runtime alike
            for k, fn in runners.items():
                times[k] += C.timed(lambda fn=fn: [fn(x) for _ in range(iters[b])], 1)
        results[f"batch{b}"] = {k: C.rate(b * iters[b], t) for k, t in times.items()}
        C.log(f"batch {b}: " + ", ".join(f"{k} {r['per_s']:.1f} img/s" for k, r in results[f'batch{b}'].items()))

    rows = []
    for key, res in results.items():
        for k in ("eager", "torch.compile", "onnxruntime", "onnxruntime-int8"):
            if k in res:
                rows.append([f"{key} {k}", res[k]["per_s"], res[k]["per_s"] / res["eager"]["per_s"]])
            elif k in ("torch.compile", "onnxruntime-int8"):
                rows.append([f"{key} {k}", "unavailable", "-"])
    print(C.table(rows, ["runtime", "images/s", "vs eager"]))
    notes = [f"model: {model_src}", f"onnx: {ort_src}",
             "int8: " + (", ".join(f"batch {b} {results[f'batch{b}']['onnxruntime-int8']['per_s'] / results[f'batch{b}']['onnxruntime']['per_s']:.2f}x fp32 ONNX Runtime"
                                   for b in BATCHES) if "onnxruntime-int8" in results["batch1"] else f"unavailable: {int8_info.get('reason')}"),
             "torch.compile: " + (f"{compile_info['compile_s']:.0f} s to compile both batch sizes"
                                  if compile_info["available"] else f"unavailable: {compile_info['reason']}"),
             f"{torch.get_num_threads()} torch threads, onnxruntime "
             f"{args.threads or 'default'} threads, {repeats} repeats"]
    b32 = results["batch32"]
    C.finish(NAME, args, b32["onnxruntime"]["per_s"], b32["eager"]["per_s"], "images/s",
             {"backbone": args.backbone, "model": model_src, "export": ort_src, "image_size": SIZE,
              "repeats": repeats, "calls_per_repeat": iters, "compile": compile_info, "int8": int8_info, "results": results,
              "headline": "ONNX Runtime (emorec's exporter) vs PyTorch eager, batch 32"},
             notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
