#!/usr/bin/env python
"""How much work Conv2Former-N does on a Raspberry Pi's core, without a Pi: instructions counted under qemu.

Every row runs one inference on the same emulated core (rpi5: Cortex-A76, rpi4: Cortex-A72), one thread, the
same input, after a warm-up inference, and counts only that inference (between marker syscalls) with our qemu
plugin (c2f_edge/board/insn_count.c). Emulated time means nothing (it is not even monotonic in the work);
instruction counts do not depend on the host and are exact. They say how much work each runtime does, not
how long it takes: a scalar load and a 128-bit FMA count one each. Columns:

  instructions, and per class: NEON FMA by element type and lanes, other NEON, NEON loads and stores,
  scalar FP, scalar loads and stores, branches, other;
  FMA lanes per model MAC: fused multiply-add lanes over the model's multiply-accumulates (1.0 = each MAC
  is one FMA lane; less: tricks like Winograd, more: wasted lanes);
  max |diff| of the output against ONNX Runtime on this machine (x86, fp32).

    python scripts/bench_arm.py --board rpi5 [--json bench_arm.json] [--onnx PATH] [--top 10]

Rows: the TVM bundle for the board's target, untuned (default schedules) and tuned where a tuning log for
that target exists, and where the core has fp16 arithmetic (rpi5) the `--precision fp16` bundle
(tvm_fp16, tuned from tuning_logs/<target>-fp16/ where that fits); ONNX Runtime 1.32.0's aarch64 wheel
on the same ONNX file (ORT_ENABLE_ALL, sequential, 1 thread); ncnn 1.0.20250503's aarch64 wheel on pnnx's conversion of the same torch model (TorchScript,
fp16=0), all fp32 (ncnn_fp32) and with ncnn's default options (ncnn: fp16 storage and arithmetic where the
core has them, as on the A76; the A72 has no fp16 arithmetic). The ncnn rows need pnnx
(pip install -c constraints.txt 'c2f-edge[bench]') and an ONNX file with its export manifest.
Needs `make setup-system` (the emulated board, the dynamic qemu-user and the plugin).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BOARDS = {"rpi5": ("rpi5", "cortex-a76", "Raspberry Pi 5 (Cortex-A76)"),
          "rpi4": ("rpi4", "cortex-a72", "Raspberry Pi 4 (Cortex-A72)")}
ESTIMATE_NOTE = ("a throughput bound of the core's pipes (board/cycle_model.py) at the board's clock, one "
                 "thread; blind to caches and memory bandwidth, dependency latency, branch mispredictions and "
                 "multi-thread scaling, so real times are higher. x ORT, x ncnn: estimate over ONNX Runtime's, "
                 "ncnn's (default options)")
SHOWN = (("fma_f32x4", "FMA f32x4"), ("fma_f16x8", "FMA f16x8"), ("neon_other", "NEON other"),
         ("neon_load", "NEON ld"), ("neon_store", "NEON st"), ("fp_scalar", "scalar FP"), ("load", "loads"),
         ("store", "stores"), ("branch", "branches"), ("other", "other"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", choices=sorted(BOARDS), required=True, help="whose core to emulate")
    p.add_argument("--onnx", help="exported model (default: build/onnx/model.onnx, exported if missing)")
    p.add_argument("--bundle-dir", default="build/bench-arm", help="where the TVM bundles are kept")
    p.add_argument("--rebuild", action="store_true", help="recompile the TVM bundles")
    p.add_argument("--top", type=int, default=10, help="TVM kernels listed by instructions (default 10)")
    p.add_argument("--skip", nargs="*", default=[], choices=["onnxruntime", "ncnn"], help="rows to leave out")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def tvm_bundles(onnx: Path, target: str, out: Path, rebuild: bool) -> tuple[dict[str, Path], dict[str, str]]:
    """The untuned bundle, and the tuned one if a log for the target fits; notes for the rows left out."""
    from c2f_edge.backend import targets, tuning_db
    from c2f_edge.backend.precision import has_fp16
    from c2f_edge.compile import CompileConfig, compile_bundle
    from c2f_edge.core.artifacts import read_manifest, sha256_file
    from c2f_edge.core.onnx_file import graph_signature, load_onnx

    spec = targets.get(target)
    signature = graph_signature(load_onnx(onnx))
    log, note = tuning_db.find_log(target, spec.to_json(), signature, machine=spec.machine())
    builds, notes = {"tvm": ("none", "fp32")}, {}
    if log is None:
        notes["tvm_tuned"] = f"skipped: {note}"
    else:
        builds["tvm_tuned"] = (str(log.path), "fp32")
    if has_fp16(spec.to_json()):
        log16, _ = tuning_db.find_log(target, spec.to_json(), signature, machine=spec.machine(), precision="fp16")
        builds["tvm_fp16"] = (str(log16.path) if log16 else "none", "fp16")
    bundles = {}
    for name, (tuning_log, precision) in builds.items():
        d = out / f"{target}-{name}"
        m = read_manifest(d) if (d / "manifest.json").is_file() else {}
        cfg = m.get("config", {})
        if rebuild or m.get("onnx", {}).get("sha256") != sha256_file(onnx) or cfg.get("tuning_log") != tuning_log \
                or cfg.get("precision", "fp32") != precision:
            print(f"compiling {name} for {target} ...", file=sys.stderr)
            compile_bundle(CompileConfig(target=target, onnx=str(onnx), tuning_log=tuning_log, out=str(d),
                                         verify="none", precision=precision))
        bundles[name] = d
    return bundles, notes


def ncnn_model(onnx: Path, shape: list[int], out: Path) -> Path | str:
    """pnnx's ncnn model (fp32 weights) of the torch model the ONNX file was exported from, as its export
    manifest records it: the path without .param/.bin, or why there is none."""
    from c2f_edge.board import ncnn_model as ncnn
    from c2f_edge.core.artifacts import manifest_or_empty
    from c2f_edge.models.weights import load_model, weights_of_artifact

    try:
        import pnnx  # noqa: F401
    except ImportError:
        return ncnn.MISSING
    source = weights_of_artifact(manifest_or_empty(onnx.parent))
    if source is None:
        return f"skipped: {onnx} has no export manifest naming the torch model to convert"
    name = f"{source['variant']}-{source['weights'] or Path(source['checkpoint']).stem}-{source['seed']}-" + \
        "x".join(map(str, shape))
    model_dir = out / f"ncnn-{name}"
    if (model_dir / "model.ncnn.bin").is_file():
        return model_dir / "model.ncnn"
    torch_model, _ = load_model(**source)
    return ncnn.convert(torch_model, shape, model_dir)


def row(count, macs: int, reference: np.ndarray) -> dict:
    s = count.summary
    est = count.estimate
    return {"estimate": None if est is None else {k: est[k] for k in ("cycles", "ms", "clock_ghz", "bound_by")},
            "instructions": s["instructions"], "classes": s["classes"], "neon_load_bytes": s["neon_load_bytes"],
            "neon_store_bytes": s["neon_store_bytes"], "fma_lanes": s["fma_lanes"],
            "fma_lanes_per_mac": s["fma_lanes"] / macs,
            "max_abs_diff_vs_ort": float(np.abs(count.output - reference).max())}


def print_table(board: str, results: dict, notes: dict, top: dict, n_top: int) -> None:
    title = BOARDS[board][2]
    print(f"\n{title}, emulated (qemu), 1 thread, one inference after a warm-up; counts in millions")
    cols = ["row", "instr", *[label for _, label in SHOWN], "lanes/MAC", "|diff| vs ORT", "est. ms", "x ORT",
            "x ncnn"]
    lines = [cols]

    def ms(name):
        r = results.get(name)
        return r["estimate"]["ms"] if r and r["estimate"] else None

    for name, r in results.items():
        est = ms(name)
        ratios = [f"{est / ms(other):.2f}" if est and ms(other) else "-" for other in ("onnxruntime", "ncnn")]
        lines.append([name, f"{r['instructions'] / 1e6:,.1f}", *[f"{r['classes'][c] / 1e6:,.1f}" for c, _ in SHOWN],
                      f"{r['fma_lanes_per_mac']:.2f}", f"{r['max_abs_diff_vs_ort']:.1e}",
                      f"{est:.1f}" if est else "-", *ratios])
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    for line in lines:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths, strict=True))))
    for name, note in notes.items():
        print(f"{name}: {note}")
    if "tvm_fp16" in results and ms("tvm_fp16") and ms("tvm"):
        r16, r32 = results["tvm_fp16"], results["tvm"]
        print(f"tvm_fp16 / tvm (fp32, untuned): instructions {r16['instructions'] / r32['instructions']:.2f}x, "
              f"est. {ms('tvm_fp16') / ms('tvm'):.2f}x; its |diff| vs ORT is fp16's, judge it in the fp16 class")
    print(f"est. ms: ESTIMATES, not measurements: {ESTIMATE_NOTE}")
    for name, kernels in top.items():
        total = results[name]["instructions"]
        print(f"\n{name}: top {n_top} of {len(kernels)} functions by instructions")
        for kernel, n in kernels[:n_top]:
            print(f"  {n / 1e6:10,.1f} M  {100 * n / total:5.1f}%  {kernel}")


def main(argv=None) -> int:
    args = parse_args(argv)
    from c2f_edge.board import insn_count
    from c2f_edge.core.errors import C2FError, report
    from c2f_edge.core.onnx_file import count_macs, load_onnx, ort_session, run_ort, static_input_shape
    from c2f_edge.export import ensure_onnx

    target, cpu, _ = BOARDS[args.board]
    try:
        onnx = ensure_onnx(args.onnx)
        model = load_onnx(onnx)
        macs = count_macs(model)
        x = np.random.default_rng(0).standard_normal(static_input_shape(model)).astype(np.float32)
        reference = run_ort(ort_session(model, threads=1), x)
        bundles, notes = tvm_bundles(onnx, target, Path(args.bundle_dir), args.rebuild)
        results, top = {}, {}
        with tempfile.TemporaryDirectory(prefix="c2f-bench-arm-") as work:
            for name, bundle in bundles.items():
                t0 = time.perf_counter()
                print(f"counting {name} on an emulated {cpu} ...", file=sys.stderr)
                count = insn_count.count_bundle(bundle, x, cpu, Path(work) / name)
                print(f"  done in {time.perf_counter() - t0:.0f} s (emulated time: not a latency)", file=sys.stderr)
                results[name], top[name] = row(count, macs, reference), \
                    [(f.name, f.instructions) for f in count.functions]
            if "onnxruntime" not in args.skip:
                t0 = time.perf_counter()
                print(f"counting onnxruntime (aarch64 wheel) on an emulated {cpu} ...", file=sys.stderr)
                count = insn_count.count_onnxruntime(onnx, x, cpu, Path(work) / "onnxruntime")
                print(f"  done in {time.perf_counter() - t0:.0f} s (emulated time: not a latency)", file=sys.stderr)
                results["onnxruntime"] = row(count, macs, reference)
            if "ncnn" not in args.skip:
                ncnn = ncnn_model(onnx, list(x.shape), Path(args.bundle_dir))
                if isinstance(ncnn, str):
                    notes["ncnn"] = ncnn
                for name, fp32 in (("ncnn_fp32", True), ("ncnn", False)) if not isinstance(ncnn, str) else ():
                    t0 = time.perf_counter()
                    print(f"counting {name} (aarch64 wheel) on an emulated {cpu} ...", file=sys.stderr)
                    count = insn_count.count_ncnn(ncnn, x, cpu, Path(work) / name, fp32=fp32)
                    print(f"  done in {time.perf_counter() - t0:.0f} s (emulated time: not a latency)",
                          file=sys.stderr)
                    results[name] = row(count, macs, reference)
    except C2FError as e:
        return report(e)
    print_table(args.board, results, notes, top, args.top)
    if args.json:
        doc = {"board": args.board, "target": target, "cpu": cpu, "threads": 1, "model_macs": macs,
               "estimate_note": ESTIMATE_NOTE,
               "onnx": str(onnx), "input": "np.random.default_rng(0).standard_normal(shape), float32",
               "rows": results, "notes": notes, "top_kernels": {k: v[:args.top] for k, v in top.items()}}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
