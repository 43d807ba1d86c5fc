#!/usr/bin/env python
"""Latency of Conv2Former-N on this machine: PyTorch eager (NCHW, channels_last), ONNX Runtime, TVM untuned,
TVM tuned with the shipped tuning_logs/host/ -- same input, same thread count, warm-up first.

A benchmark, not a test: numbers depend on the machine and on what else runs on it.

    python scripts/bench_host.py [--threads 2] [--runs 30] [--json bench.json]

The TVM bundles are compiled once into --bundle-dir (default build/bench/) and reused; --rebuild forces it.
A host tuning log fits one CPU model and core count: tvm_tuned uses tuning_logs/host/<cpu>-<cores>cores/
and is skipped, with a note, on a machine no shipped log was tuned on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Conv2Former-N at 224x224: 2.41 GMACs = 4.81 GFLOP per image.
GFLOP_PER_IMAGE = 4.81
NAMES = ("torch_eager", "torch_channels_last", "onnxruntime", "tvm_untuned", "tvm_tuned")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for every backend (default 2)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per backend (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop timing a backend after this long (untuned TVM takes seconds per image)")
    p.add_argument("--onnx", help="exported model (default: build/onnx/model.onnx, exported if missing)")
    p.add_argument("--tuning-log", help="log for tvm_tuned (default: the shipped log for this CPU, "
                                         "tuning_logs/host/<cpu>-<cores>cores/)")
    p.add_argument("--bundle-dir", default="build/bench", help="where the TVM bundles are kept")
    p.add_argument("--rebuild", action="store_true", help="recompile the TVM bundles")
    p.add_argument("--skip", nargs="*", default=[], choices=NAMES, help="backends to leave out")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args()


def time_it(fn, warmup: int, runs: int, max_s: float) -> list[float]:
    for _ in range(warmup):
        fn()
    out, t_end = [], time.perf_counter() + max_s
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end and len(out) >= 3:
            break
    return out


def p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]


def sgemm_peak_gflops(threads: int) -> float:
    """Best fp32 matmul throughput of this process (PyTorch's BLAS, same thread count)."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def ensure_onnx(path: str | None) -> Path:
    p = Path(path or "build/onnx/model.onnx")
    if p.is_file():
        return p
    if path:
        sys.exit(f"error: {p} not found")
    from c2f_edge.export import ExportConfig, export_onnx

    return export_onnx(ExportConfig(weights="synthetic", out=str(p.parent)))


def tvm_bundle(onnx: Path, out: Path, tuning_log: str, rebuild: bool) -> tuple[Path, float | None]:
    from c2f_edge.artifacts import sha256_file
    from c2f_edge.compile import CompileConfig, compile_bundle

    if (out / "manifest.json").is_file() and not rebuild:
        m = json.loads((out / "manifest.json").read_text())
        if m.get("onnx", {}).get("sha256") == sha256_file(onnx) and m["config"].get("tuning_log") == tuning_log:
            return out, None
    t0 = time.perf_counter()
    compile_bundle(CompileConfig(target="host", onnx=str(onnx), tuning_log=tuning_log, out=str(out), verify="none"))
    return out, time.perf_counter() - t0


def main() -> int:
    args = parse_args()
    # Thread counts must be fixed before the libraries start their pools.
    for var in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import onnxruntime as ort
    import torch

    from c2f_edge.export import parity_inputs
    from c2f_edge.models.weights import load_model

    torch.set_num_threads(args.threads)
    onnx = ensure_onnx(args.onnx)
    x = parity_inputs(1)  # one real photo, ImageNet-normalized, [1,3,224,224] float32
    results: dict[str, dict] = {}
    notes: dict[str, str] = {}

    def record(name, times):
        results[name] = {"median_ms": 1e3 * statistics.median(times), "p90_ms": 1e3 * p90(times), "runs": len(times)}
        print(f"  {name:<20} median {results[name]['median_ms']:8.1f} ms   p90 {results[name]['p90_ms']:8.1f} ms"
              f"   ({len(times)} runs)", file=sys.stderr, flush=True)

    model, _ = load_model("n", weights="synthetic", seed=0)
    model.eval()
    xt = torch.from_numpy(x)
    if "torch_eager" not in args.skip:
        with torch.inference_mode():
            record("torch_eager", time_it(lambda: model(xt), args.warmup, args.runs, args.max_seconds))
    if "torch_channels_last" not in args.skip:
        m_cl = model.to(memory_format=torch.channels_last)
        x_cl = xt.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            record("torch_channels_last", time_it(lambda: m_cl(x_cl), args.warmup, args.runs, args.max_seconds))

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0]
    record("onnxruntime", time_it(lambda: sess.run(None, {"input": x}), args.warmup, args.runs, args.max_seconds))

    from c2f_edge.compile import load_bundle

    if args.tuning_log is None:
        from c2f_edge import targets, tuning_db

        args.tuning_log = str(tuning_db.log_dir("host", targets.get("host").machine()))
    for name, log in (("tvm_untuned", "none"), ("tvm_tuned", args.tuning_log)):
        if name in args.skip:
            continue
        if log != "none" and not Path(log, "database_tuning_record.json").is_file():
            from c2f_edge.tuning_db import machine_logs

            others = machine_logs(Path(log).parent)
            notes[name] = f"skipped: no tuning log for this CPU at {log}" + (
                f" (logs for other CPUs: {', '.join(others)})" if others else "")
            print(f"  {name:<20} {notes[name]}", file=sys.stderr)
            continue
        bundle, compile_s = tvm_bundle(onnx, Path(args.bundle_dir) / name, log, args.rebuild)
        run = load_bundle(bundle)
        diff = float(np.max(np.abs(run(x) - ref)))
        m = json.loads((bundle / "manifest.json").read_text())
        notes[name] = (f"{m['tuning']['note']}; max abs diff vs ORT {diff:.1e}"
                       + (f"; compiled in {compile_s:.0f}s" if compile_s else ""))
        record(name, time_it(lambda run=run: run(x), 1, args.runs, args.max_seconds))

    peak = sgemm_peak_gflops(args.threads)
    ort_med, ort_p90 = results["onnxruntime"]["median_ms"], results["onnxruntime"]["p90_ms"]
    print(f"\nConv2Former-N, 1x3x224x224 fp32, {args.threads} threads, this machine "
          f"(sgemm peak of this process: {peak:.1f} GFLOP/s)")
    print(f"{'backend':<22}{'median ms':>10}{'p90 ms':>10}{'vs ORT':>9}{'p90 vs ORT':>12}{'GFLOP/s':>9}{'% peak':>8}")
    for name in NAMES:
        if name not in results:
            continue
        r = results[name]
        r["ratio_vs_ort"] = r["median_ms"] / ort_med
        r["p90_ratio_vs_ort"] = r["p90_ms"] / ort_p90
        r["gflops"] = GFLOP_PER_IMAGE / (r["median_ms"] / 1e3)
        print(f"{name:<22}{r['median_ms']:>10.1f}{r['p90_ms']:>10.1f}{r['ratio_vs_ort']:>8.2f}x"
              f"{r['p90_ratio_vs_ort']:>11.2f}x{r['gflops']:>9.1f}{100 * r['gflops'] / peak:>7.0f}%")
    for name, note in notes.items():
        print(f"  {name}: {note}")
    if Path(args.tuning_log, "meta.json").is_file():
        meta = json.loads(Path(args.tuning_log, "meta.json").read_text())
        print(f"  tuning log: {meta.get('trials')} trials, {meta.get('tuning_time_s')} s, "
              f"on {meta.get('machine', {}).get('cpu')} ({meta.get('machine', {}).get('cores')} cores)")
    if args.json:
        out = {k: {"median_ms": round(v["median_ms"], 3), "p90_ms": round(v["p90_ms"], 3),
                   "ratio_vs_ort": round(v["ratio_vs_ort"], 3)} for k, v in results.items()}
        out["sgemm_peak_gflops"] = round(peak, 2)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
