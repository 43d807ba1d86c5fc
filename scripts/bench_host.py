#!/usr/bin/env python
"""Latency of Conv2Former-N on this machine: PyTorch eager (NCHW, channels_last), torch.compile, ONNX Runtime,
OpenVINO, TVM untuned, TVM tuned with the shipped tuning_logs/host/ -- same input, same thread count, fp32,
warm-up first.

A benchmark, not a test: numbers depend on the machine and on what else runs on it.

    python scripts/bench_host.py [--threads 2] [--runs 30] [--rounds 3] [--json bench.json]

The peers a user would try instead of TVM are optional extras: `pip install -c constraints.txt
'c2f-edge[bench]'` installs OpenVINO; torch.compile (inductor, with freezing) needs a C++ compiler. A peer
that is missing gets a row saying so, and the rest runs. Its compile time is not in its latency: the
`load s` column is the time from loading to the end of the first call, for every row.

Every row's output is checked against ONNX Runtime's with the fp32 tolerance class of c2f_edge.core.metrics
(a peer that quietly computes in bf16 or fp16 is not a fair row): a row outside it is refused with its
diff, not printed as a time. Each row's share of the machine's fp32 GEMM peak (the faster of PyTorch's
and NumPy's BLAS at the same thread count, named in the output) is printed for Conv2Former-N's 4.81 GFLOP.

Each backend is timed in a fresh Python process that imports only what it needs, because running PyTorch
first in the same process slowed TVM by ~10% and ONNX Runtime by ~4% afterwards. The runs are split into
--rounds interleaved rounds, each starting one process per backend in an order rotated every round, and
the samples of all rounds are pooled; the spread of the per-round medians and ratios shows how stable
they are. --same-process times every backend in this one process instead, in a fixed order (the old way).

The TVM bundles are compiled once into --bundle-dir (default build/bench/) and reused while their manifest
matches this run (pipeline version, the backend's source digest, TVM, ONNX file, build options); --rebuild
forces it.
A host tuning log fits one CPU model and core count: tvm_tuned uses tuning_logs/host/<cpu>-<cores>cores/
and is skipped, with a note, on a machine no shipped log was tuned on.

Before and after a kernel change, in one run: build a host bundle before the change (`c2f-edge compile
--target host --tuning-log none --out build/before`), make the change, then time both side by side:

    python scripts/bench_host.py --baseline build/before --skip torch_eager torch_channels_last tvm_tuned

The host target builds with the split reduction (`compile --split-reduction`) by default. --with-unsplit
adds TVM untuned and tuned built with `--no-split-reduction`, side by side with the default builds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Conv2Former-N at 224x224: 2.41 GMACs = 4.81 GFLOP per image.
GFLOP_PER_IMAGE = 4.81
NAMES = ("torch_eager", "torch_channels_last", "torch_compile", "onnxruntime", "openvino", "tvm_untuned", "tvm_tuned",
         "tvm_untuned_nchw", "tvm_untuned_unsplit", "tvm_tuned_unsplit")
# Peers that read the ONNX file like ONNX Runtime does; the torch rows build the model themselves.
ONNX_PEERS = ("onnxruntime", "openvino")
INSTALL_BENCH = "pip install -c constraints.txt 'c2f-edge[bench]'"
# TVM rows: (tuning log, blocked layout, split reductions: None = the host target's default). tvm_untuned_nchw
# is the layout ablation, timed only with --with-nchw; the *_unsplit rows (compile --no-split-reduction) only
# with --with-unsplit.
TVM_BUILDS = {"tvm_untuned": ("none", True, None), "tvm_tuned": (None, True, None),
              "tvm_untuned_nchw": ("none", False, False), "tvm_untuned_unsplit": ("none", True, False),
              "tvm_tuned_unsplit": (None, True, False)}
OPT_IN = {"tvm_untuned_nchw": "with_nchw", "tvm_untuned_unsplit": "with_unsplit", "tvm_tuned_unsplit": "with_unsplit"}
BASELINE = "baseline"  # --baseline's row
THREAD_VARS = ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SCRIPT = os.path.abspath(__file__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for every backend (default 2)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per backend (default 30)")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds, one fresh process per backend in each (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first, in every process (default 3)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop timing a backend after this long, all rounds together "
                        "(untuned TVM takes seconds per image)")
    p.add_argument("--same-process", action="store_true",
                   help="time every backend in this one process, in a fixed order, one round (the old way)")
    p.add_argument("--onnx", help="exported model (default: build/onnx/model.onnx, exported if missing)")
    p.add_argument("--tuning-log", help="log for tvm_tuned (default: the shipped log for this CPU, "
                                         "tuning_logs/host/<cpu>-<cores>cores/)")
    p.add_argument("--bundle-dir", default="build/bench", help="where the TVM bundles are kept")
    p.add_argument("--rebuild", action="store_true", help="recompile the TVM bundles")
    p.add_argument("--skip", nargs="*", default=[], choices=NAMES, help="backends to leave out")
    p.add_argument("--with-nchw", action="store_true",
                   help="also time TVM untuned with activations left NCHW (what the blocked layout buys)")
    p.add_argument("--with-unsplit", action="store_true",
                   help="also time TVM untuned and tuned built with `compile --no-split-reduction` (what the "
                        "default split reduction buys)")
    p.add_argument("--baseline", metavar="BUNDLE",
                   help="a host bundle built earlier (e.g. before a schedule change), timed as row `baseline` "
                        "in the same rounds as the others")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    # How the parent starts a child: it times one backend (or the sgemm peak) for one round, with --runs and
    # --max-seconds already cut down to that round's share, and leaves its results in --workdir.
    p.add_argument("--worker", choices=(*NAMES, BASELINE, "sgemm"), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs < 1 or args.rounds < 1:
        p.error("--runs and --rounds must be at least 1")
    if args.baseline and (why := baseline_problem(Path(args.baseline))):
        p.error(f"--baseline {args.baseline}: {why}")
    return args


def thread_env(threads: int) -> dict[str, str]:
    return {var: str(threads) for var in THREAD_VARS}


# --- timing one backend (in a child, or in this process with --same-process) ---------------------------

def time_it(fn, warmup: int, runs: int, max_s: float) -> tuple[list[float], object]:
    """Seconds per call of fn, and fn's last result."""
    for _ in range(warmup):
        fn()
    out, t_end = [], time.perf_counter() + max_s
    for _ in range(runs):
        t0 = time.perf_counter()
        last = fn()
        out.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end and len(out) >= 3:
            break
    return out, last


def load_torch(x, threads: int, channels_last: bool = False, compiled: bool = False):
    """Eager PyTorch (NCHW or channels_last), or torch.compile's inductor with freezing."""
    import torch

    from c2f_edge.models.weights import load_model

    torch.set_num_threads(threads)
    model, _ = load_model("n", weights="synthetic", seed=0)
    model.eval()
    xt = torch.from_numpy(x)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    if compiled:
        import torch._inductor.config as inductor

        inductor.freezing = True  # weights become constants: what a deployment would compile
        model = torch.compile(model, backend="inductor")

    @torch.inference_mode()
    def run():
        return model(xt)

    return run


def load_openvino(onnx: str, x, threads: int):
    import openvino as ov

    core = ov.Core()
    # Without the f32 hint OpenVINO runs bf16 on CPUs with AMX or AVX512-BF16 (4.7e-2 off on a Xeon).
    compiled = core.compile_model(core.read_model(onnx), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    output = compiled.output(0)
    return lambda: request.infer([x])[output]


def load_ort(onnx: str, x, threads: int):
    from c2f_edge.core.onnx_file import INPUT_NAME, ort_session

    sess = ort_session(onnx, threads=threads)
    return lambda: sess.run(None, {INPUT_NAME: x})[0]


def load_tvm(bundle: str, x):
    from c2f_edge.compile import load_bundle

    run = load_bundle(bundle)
    return lambda: run(x)


def load_backend(name: str, model: str | None, x, threads: int):
    if name.startswith("torch"):
        return load_torch(x, threads, channels_last=name == "torch_channels_last", compiled=name == "torch_compile")
    if name == "onnxruntime":
        return load_ort(model, x, threads)
    if name == "openvino":
        return load_openvino(model, x, threads)
    return load_tvm(model, x)


def peer_missing(name: str) -> str | None:
    """Why an optional peer cannot run on this machine, or None."""
    import importlib.util
    import shutil

    if name == "openvino" and importlib.util.find_spec("openvino") is None:
        return f"skipped: OpenVINO is not installed ({INSTALL_BENCH})"
    if name == "torch_compile" and not (shutil.which("g++") or shutil.which("c++")):
        return "skipped: torch.compile's inductor needs a C++ compiler (g++) on PATH"
    return None


def time_backend(name: str, model: str | None, work: Path, rnd: int, args) -> dict:
    """Times one backend here; leaves its timings, its load time and its last output in work."""
    import numpy as np

    x = np.load(work / "input.npy")
    t0 = time.perf_counter()
    run = load_backend(name, model, x, args.threads)
    run()  # torch.compile compiles here: kept out of the latency, reported as load_s
    load_s = time.perf_counter() - t0
    times, out = time_it(run, args.warmup, args.runs, args.max_seconds)
    np.save(work / f"{name}.npy", out.numpy() if hasattr(out, "numpy") else np.asarray(out))
    record = {"times": times, "load_s": load_s}
    (work / f"{name}-{rnd}.json").write_text(json.dumps(record))
    return record


def best_gflops(matmul, make, sizes=(512, 1024, 2048)) -> float:
    best = 0.0
    for n in sizes:
        a, b = make(n), make(n)
        for _ in range(2):
            matmul(a, b)
        for _ in range(5):
            t0 = time.perf_counter()
            matmul(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def sgemm_peak_gflops(threads: int) -> dict[str, float]:
    """Best fp32 matmul throughput of each BLAS this process has, at the same thread count (the thread
    variables are set before either library starts its pool)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    return {"torch": best_gflops(torch.matmul, lambda n: torch.randn(n, n)),
            "numpy": best_gflops(np.matmul, lambda n: rng.standard_normal((n, n), dtype=np.float32))}


def worker(args) -> int:
    work = Path(args.workdir)
    if args.worker == "sgemm":
        (work / "sgemm.json").write_text(json.dumps(sgemm_peak_gflops(args.threads)))
        return 0
    if not args.worker.startswith("torch"):
        # tvm_ffi imports torch whenever it can; a None entry makes that import fail quietly.
        sys.modules.setdefault("torch", None)
    time_backend(args.worker, args.model, work, args.round, args)
    return 0


# --- the parent: one child per backend and round ------------------------------------------------------

def rotated(names: list[str], rnd: int) -> list[str]:
    k = rnd % len(names)
    return names[k:] + names[:k]


def child_cmd(name: str, model: str | None, work: Path, rnd: int, args) -> list[str]:
    return [sys.executable, SCRIPT, "--worker", name, "--workdir", str(work), "--round", str(rnd),
            "--model", model or "", "--threads", str(args.threads), "--warmup", str(args.warmup),
            "--runs", str(math.ceil(args.runs / args.rounds)), "--max-seconds", str(args.max_seconds / args.rounds)]


def run_child(name: str, cmd: list[str], env: dict[str, str]) -> None:
    """Runs a child to its end; if it fails, exits with the last line of its stderr."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        sys.exit(f"error: {name} failed: {lines[-1]}")


def print_round(name: str, record: dict, label: str) -> None:
    times = record["times"]
    print(f"  {label}{name:<20} median {1e3 * statistics.median(times):8.1f} ms   p90 {1e3 * p90(times):8.1f} ms"
          f"   ({len(times)} runs; load {record['load_s']:.1f} s)", file=sys.stderr, flush=True)


def time_per_process(models: dict[str, str | None], work: Path, args) -> dict[str, list[dict]]:
    """Per backend, one record per round: {"times": seconds per run, "load_s": load and first call}."""
    env = {**os.environ, **thread_env(args.threads)}
    records: dict[str, list[dict]] = {name: [] for name in models}
    for rnd in range(args.rounds):
        for name in rotated(list(models), rnd):
            run_child(name, child_cmd(name, models[name], work, rnd, args), env)
            records[name].append(json.loads((work / f"{name}-{rnd}.json").read_text()))
            print_round(name, records[name][-1], f"round {rnd + 1}/{args.rounds}  ")
    return records


def time_same_process(models: dict[str, str | None], work: Path, args) -> dict[str, list[dict]]:
    records = {}
    for name, model in models.items():
        records[name] = [time_backend(name, model, work, 0, args)]
        print_round(name, records[name][0], "")
    return records


def sgemm_peak(work: Path, args) -> tuple[float, str]:
    """The machine's fp32 GEMM peak at the thread count used, and which BLAS reached it."""
    if args.same_process:
        peaks = sgemm_peak_gflops(args.threads)
    else:
        run_child("sgemm", child_cmd("sgemm", None, work, 0, args), {**os.environ, **thread_env(args.threads)})
        peaks = json.loads((work / "sgemm.json").read_text())
    best = max(peaks, key=peaks.get)
    others = ", ".join(f"{k} {v:.0f}" for k, v in peaks.items() if k != best)
    return peaks[best], f"{best}'s BLAS" + (f"; {others}" if others else "")


# --- preparing the models -----------------------------------------------------------------------------

def tvm_bundle(onnx: Path, out: Path, tuning_log: str, rebuild: bool,
               blocked: bool = True, split: bool | None = None) -> tuple[Path, float | None]:
    from c2f_edge.backend import targets
    from c2f_edge.compile import CompileConfig, compile_bundle
    from c2f_edge.compile.stage import split_reduction_for

    spec = targets.get("host")
    split = split_reduction_for(split, spec, spec.to_json(), "fp32")

    if (out / "manifest.json").is_file() and not rebuild:
        why = outdated(json.loads((out / "manifest.json").read_text()), onnx, tuning_log, blocked, split)
        if why is None:
            return out, None
        print(f"  {out.name:<20} rebuilding: {why}", file=sys.stderr)
    t0 = time.perf_counter()
    compile_bundle(CompileConfig(target="host", onnx=str(onnx), tuning_log=tuning_log, out=str(out), verify="none",
                                 blocked_layout=blocked, split_reduction=split))
    return out, time.perf_counter() - t0


def outdated(manifest: dict, onnx: Path, tuning_log: str, blocked: bool, split: bool) -> str | None:
    """Why a cached bundle is not what this run would build (so it is rebuilt), or None to reuse it."""
    from c2f_edge.backend.pipeline import PIPELINE_VERSION, source_digest
    from c2f_edge.core.artifacts import sha256_file, tool_versions

    versions, config = manifest.get("versions", {}), manifest.get("config", {})
    checks = [
        (versions.get("c2f-edge pipeline") == PIPELINE_VERSION, "built by another pipeline version"),
        (versions.get("c2f-edge backend source") == source_digest(), "built from other backend source"),
        (versions.get("apache-tvm") == tool_versions().get("apache-tvm"), "built by another TVM"),
        (manifest.get("onnx", {}).get("sha256") == sha256_file(onnx), "built from another ONNX file"),
        (config.get("tuning_log") == tuning_log, "built with another tuning log"),
        (config.get("blocked_layout", True) == blocked, "built with another layout"),
        (config.get("split_reduction", False) == split, "built with the split reduction "
                                                         + ("off" if split else "on")),
    ]
    return next((why for ok, why in checks if not ok), None)


def default_tuning_log() -> str:
    from c2f_edge.backend import targets, tuning_db

    return str(tuning_db.log_dir("host", targets.get("host").machine()))


def missing_log_note(log: str) -> str:
    from c2f_edge.backend.tuning_db import machine_logs

    others = machine_logs(Path(log).parent)
    return f"skipped: no tuning log for this CPU at {log}" + (
        f" (logs for other CPUs: {', '.join(others)})" if others else "")


def stale_log_note(log: str, onnx: Path) -> str | None:
    """Why a tuning log does not fit this machine's host build (checked before minutes of compiling), or None."""
    from c2f_edge.backend import targets, tuning_db
    from c2f_edge.core.onnx_file import graph_signature, load_onnx

    found = tuning_db.read_log(log)
    why = tuning_db.mismatch(found, targets.get("host").to_json(), graph_signature(load_onnx(onnx)))
    return f"skipped: the tuning log {log} is stale ({why}); re-tune on {tuning_db.tuned_on(found)}" if why else None


def baseline_problem(bundle: Path) -> str | None:
    """Why a directory cannot be the baseline row (checked before minutes of compiling), or None."""
    manifest = bundle / "manifest.json"
    if not (bundle / "model.so").is_file() or not manifest.is_file():
        return "no bundle there (model.so and manifest.json from `c2f-edge compile --target host`)"
    from c2f_edge.backend import targets

    target = json.loads(manifest.read_text()).get("target", {})
    if target.get("name") != "host":
        return f"a bundle for {target.get('name')!r}, not this machine's host target: rebuild it with --target host"
    here = targets.get("host").to_json()
    if target.get("json") != here:
        return f"built for {target.get('json')}, this machine is {here}: rebuild it here with --target host"
    return None


def not_tuned(tuning: dict) -> str | None:
    """Why a bundle's manifest does not describe a tuned build (no row is printed for it), or None."""
    kernels = tuning.get("kernels") or {}
    if tuning.get("status") != "tuned":
        return f"refused: the build is {tuning.get('status')} ({tuning.get('note')})"
    if not kernels.get("from_log"):
        return (f"refused: the log applied to none of the build's {kernels.get('total', '?')} kernels "
                "(its workloads no longer match: re-tune, or bump PIPELINE_VERSION)")
    return None


def prepare_models(onnx: Path, args, notes: dict[str, str]) -> tuple[dict[str, str | None], dict[str, str]]:
    """What each backend loads (None for torch), and per TVM bundle the note on how it was built."""
    models: dict[str, str | None] = {}
    for name in NAMES[:NAMES.index("tvm_untuned")]:
        # ONNX Runtime is the reference of every ratio and diff: always timed.
        if name in args.skip and name != "onnxruntime":
            continue
        if why := peer_missing(name):
            notes[name] = why
            print(f"  {name:<20} {why}", file=sys.stderr)
            continue
        models[name] = str(onnx) if name in ONNX_PEERS else None
    built = {}
    for name, (log, blocked, split) in TVM_BUILDS.items():
        log = log or args.tuning_log
        if name in args.skip or (name in OPT_IN and not getattr(args, OPT_IN[name])):
            continue
        if log != "none" and not Path(log, "database_tuning_record.json").is_file():
            notes[name] = missing_log_note(log)
            print(f"  {name:<20} {notes[name]}", file=sys.stderr)
            continue
        if log != "none" and (stale := stale_log_note(log, onnx)):
            notes[name] = stale
            print(f"  {name:<20} {notes[name]}", file=sys.stderr)
            continue
        bundle, compile_s = tvm_bundle(onnx, Path(args.bundle_dir) / name, log, args.rebuild, blocked, split)
        tuning = json.loads((bundle / "manifest.json").read_text())["tuning"]
        if name.startswith("tvm_tuned") and (refused := not_tuned(tuning)):
            notes[name] = refused
            print(f"  {name:<20} {notes[name]}", file=sys.stderr)
            continue
        models[name] = str(bundle)
        built[name] = (tuning["note"], f"; compiled in {compile_s:.0f}s" if compile_s else "")
    if args.baseline:
        models[BASELINE] = args.baseline
        manifest = json.loads(Path(args.baseline, "manifest.json").read_text())
        built[BASELINE] = (f"{args.baseline}, {manifest['tuning']['note']}, built {manifest.get('created', '?')}", "")
    return models, built


# --- results ------------------------------------------------------------------------------------------

def p90(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]


def summarize(round_times: list[list[float]]) -> dict:
    """Pooled median and p90 over all rounds (ms), and each round's own median."""
    pooled = [t for ts in round_times for t in ts]
    return {"median_ms": 1e3 * statistics.median(pooled), "p90_ms": 1e3 * p90(pooled), "runs": len(pooled),
            "round_medians_ms": [1e3 * statistics.median(ts) for ts in round_times]}


def summarize_records(records: list[dict]) -> dict:
    # The slowest load is the cold one: the first compile, before any cache (inductor's) is warm.
    return {**summarize([r["times"] for r in records]), "load_s": max(r["load_s"] for r in records)}


def round_ratios(r: dict, ort: dict) -> list[float]:
    """Round i's median over ONNX Runtime's median of the same round."""
    return [a / b for a, b in zip(r["round_medians_ms"], ort["round_medians_ms"], strict=True)]


def check_output(ref, out) -> tuple[float, list[str]]:
    """Max abs diff of a row's output against ONNX Runtime's, and the fp32 tolerance checks it fails."""
    import numpy as np

    from c2f_edge.core.metrics import judge, logit_metrics, tolerances

    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape != out.shape:
        return float("inf"), [f"output shape {list(out.shape)}, ONNX Runtime's is {list(ref.shape)}"]
    m = logit_metrics(ref.reshape(len(ref), -1), out.reshape(len(out), -1))
    return m["max_abs_diff"], judge(m, tolerances()["fp32"])


def check_rows(work: Path, names, notes: dict[str, str]) -> tuple[dict[str, float], set[str]]:
    """Each row's max abs diff against ONNX Runtime, and the rows refused for being outside fp32."""
    import numpy as np

    ref = np.load(work / "onnxruntime.npy")
    diffs, refused = {"onnxruntime": 0.0}, set()
    for name in names:
        if name == "onnxruntime":
            continue
        diffs[name], failures = check_output(ref, np.load(work / f"{name}.npy"))
        if failures:
            refused.add(name)
            notes[name] = (f"refused: max abs diff vs ORT {diffs[name]:.1e}, outside the fp32 tolerance "
                           f"({'; '.join(failures)}): not an fp32 result, so no time is printed")
    return diffs, refused


def add_ratios(results: dict[str, dict], peak: float) -> None:
    ort = results["onnxruntime"]
    for r in results.values():
        r["ratio_vs_ort"] = r["median_ms"] / ort["median_ms"]
        r["p90_ratio_vs_ort"] = r["p90_ms"] / ort["p90_ms"]
        r["round_ratios"] = round_ratios(r, ort)
        r["gflops"] = GFLOP_PER_IMAGE / (r["median_ms"] / 1e3)
        r["peak_pct"] = 100 * r["gflops"] / peak


def print_table(results: dict[str, dict], peak: float, peak_source: str, cpu: str, args) -> None:
    if args.same_process:
        method = "all backends in one process"
    else:
        method = f"one fresh process per backend, {args.rounds} interleaved rounds"
    print(f"\nConv2Former-N, 1x3x224x224 fp32, {args.threads} threads, {cpu}, {method}")
    print(f"sgemm peak at {args.threads} threads: {peak:.1f} GFLOP/s ({peak_source})")
    print(f"{'backend':<22}{'median ms':>10}{'p90 ms':>10}{'vs ORT':>9}{'p90 vs ORT':>12}{'GFLOP/s':>9}{'% peak':>8}"
          f"{'diff':>9}{'load s':>8}")
    for name, r in results.items():
        print(f"{name:<22}{r['median_ms']:>10.1f}{r['p90_ms']:>10.1f}{r['ratio_vs_ort']:>8.2f}x"
              f"{r['p90_ratio_vs_ort']:>11.2f}x{r['gflops']:>9.1f}{r['peak_pct']:>7.0f}%"
              f"{r['max_abs_diff']:>9.1e}{r['load_s']:>8.1f}")


# A variant row and the row it changes (the before of a before/after): their ratio is taken round by round,
# which cancels most of a busy machine's drift between rounds.
PAIRS = (("tvm_untuned", "tvm_untuned_unsplit"), ("tvm_tuned", "tvm_tuned_unsplit"),
         ("tvm_untuned_nchw", "tvm_untuned"), ("tvm_untuned", BASELINE))


def paired(results: dict[str, dict]) -> dict[str, dict]:
    """For each pair of PAIRS that both ran: the variant's round medians over its partner's, same round."""
    out = {}
    for variant, partner in PAIRS:
        if variant in results and partner in results:
            ratios = round_ratios(results[variant], results[partner])
            out[f"{variant} / {partner}"] = {"median": statistics.median(ratios), "min": min(ratios),
                                              "max": max(ratios), "per_round": ratios}
    return out


def print_spread(results: dict[str, dict], rounds: int) -> None:
    if rounds < 2:
        return
    print(f"  per-round medians, min-max of {rounds} rounds (and of round median / ORT's same-round median):")
    for name, r in results.items():
        ms, ratios = r["round_medians_ms"], r["round_ratios"]
        vs = "" if name == "onnxruntime" else f"   vs ORT {min(ratios):.2f}-{max(ratios):.2f}x"
        print(f"    {name:<20}{min(ms):8.1f}-{max(ms):.1f} ms{vs}")
    for pair, p in paired(results).items():
        print(f"  {pair}, round by round: median {p['median']:.3f} ({p['min']:.2f}-{p['max']:.2f})")


def print_notes(notes: dict[str, str], tuning_log: str) -> None:
    for name in (*NAMES, BASELINE):
        if name in notes:
            print(f"  {name}: {notes[name]}")
    if Path(tuning_log, "meta.json").is_file():
        meta = json.loads(Path(tuning_log, "meta.json").read_text())
        print(f"  tuning log: {meta.get('trials')} trials, {meta.get('tuning_time_s')} s, "
              f"on {meta.get('machine', {}).get('cpu')} ({meta.get('machine', {}).get('cores')} cores)")


def write_json(path: str, results: dict[str, dict], diffs: dict[str, float], notes: dict[str, str],
               peak: float, peak_source: str, cpu: str, args) -> None:
    rows: dict = {k: {"median_ms": round(v["median_ms"], 3), "p90_ms": round(v["p90_ms"], 3),
                      "ratio_vs_ort": round(v["ratio_vs_ort"], 3), "peak_pct": round(v["peak_pct"], 1),
                      "max_abs_diff_vs_ort": v["max_abs_diff"], "load_s": round(v["load_s"], 2),
                      "round_medians_ms": [round(m, 3) for m in v["round_medians_ms"]],
                      "round_ratios_vs_ort": [round(r, 3) for r in v["round_ratios"]]} for k, v in results.items()}
    for name, note in notes.items():
        rows.setdefault(name, {})["note"] = note
        if name not in results:
            rows[name]["status"] = "refused" if note.startswith("refused") else "skipped"
            if name in diffs:
                rows[name]["max_abs_diff_vs_ort"] = diffs[name]
    pairs = {k: {**{s: round(p[s], 3) for s in ("median", "min", "max")},
                 "per_round": [round(r, 3) for r in p["per_round"]]} for k, p in paired(results).items()}
    out = {"cpu": cpu, "threads": args.threads, "method": "same-process" if args.same_process else "per-process",
           "rounds": args.rounds, "sgemm_peak_gflops": round(peak, 2), "sgemm_peak_source": peak_source,
           "rows": rows, "paired": pairs}
    Path(path).write_text(json.dumps(out, indent=2) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    # Thread counts must be fixed before the libraries start their pools (children get them too).
    os.environ.update(thread_env(args.threads))
    if args.worker:
        return worker(args)
    if args.same_process:
        args.rounds = 1
    import numpy as np

    from c2f_edge.core.errors import C2FError
    from c2f_edge.core.images import photo_batch
    from c2f_edge.export import ensure_onnx
    from c2f_edge.tune.measure import host_machine

    try:
        onnx = ensure_onnx(args.onnx)
    except C2FError as e:
        sys.exit(f"error: {e}")
    args.tuning_log = args.tuning_log or default_tuning_log()
    notes: dict[str, str] = {}
    models, built = prepare_models(onnx, args, notes)
    with tempfile.TemporaryDirectory(prefix="bench_host-") as tmp:
        work = Path(tmp)
        np.save(work / "input.npy", photo_batch(1))  # one real photo, ImageNet-normalized, [1,3,224,224]
        timed = (time_same_process if args.same_process else time_per_process)(models, work, args)
        peak, peak_source = sgemm_peak(work, args)
        diffs, refused = check_rows(work, models, notes)
    for name, (note, compiled) in built.items():
        if name not in refused:
            notes[name] = f"{note}{compiled}"
    results = {name: {**summarize_records(timed[name]), "max_abs_diff": diffs[name]}
               for name in models if name not in refused}
    add_ratios(results, peak)
    machine = host_machine()
    cpu = f"{machine['cpu']} (LLVM {machine['llvm_mcpu']}, {machine['cores']} cores)"
    print_table(results, peak, peak_source, cpu, args)
    print_spread(results, args.rounds)
    print_notes(notes, args.tuning_log)
    if args.json:
        write_json(args.json, results, diffs, notes, peak, peak_source, cpu, args)
    if refused:
        print(f"error: refused outside the fp32 tolerance: {', '.join(sorted(refused))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
