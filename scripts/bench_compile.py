"""Compile wall time and bundle size per target, and the host bundle's inference time.

    python scripts/bench_compile.py --onnx build/onnx/model.onnx [--targets host arm64 armv7 mali adreno]

Builds into build/bench/<target>/ (untuned unless --tuning-log). Numbers depend on the machine's load:
print `uptime` next to them. The host time is TVM's timer on this CPU; compare it with ONNX Runtime's here.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", default="build/onnx/model.onnx")
    p.add_argument("--targets", nargs="+", default=["host", "arm64", "armv7", "mali", "adreno"])
    p.add_argument("--tuning-log", default="none")
    p.add_argument("--out", default="build/bench")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()

    from c2f_edge.compile import LIBRARY, CompileConfig, compile_bundle, load_bundle
    from c2f_edge.core.artifacts import read_manifest

    rows = []
    for t in args.targets:
        t0 = time.perf_counter()
        out = compile_bundle(CompileConfig(target=t, onnx=args.onnx, tuning_log=args.tuning_log,
                                           out=os.path.join(args.out, t), verify="none"))
        wall = time.perf_counter() - t0
        m = read_manifest(out)
        rows.append((t, wall, m["timings_s"], m["files"][LIBRARY]["bytes"], m["files"][LIBRARY]["elf"]))
    print(f"load average: {os.getloadavg()}")
    print(f"{'target':8} {'wall s':>7} {'compile s':>9} {'link s':>7} {'model.so MB':>11}  arch")
    for t, wall, times, size, arch in rows:
        comp = next(v for k, v in times.items() if k.startswith("compiling"))
        link = next(v for k, v in times.items() if k.startswith("linking"))
        print(f"{t:8} {wall:7.1f} {comp:9.1f} {link:7.1f} {size / 1e6:11.1f}  {arch}")
    if "host" in args.targets:
        from c2f_edge.core.onnx_file import INPUT_NAME, ort_session

        run = load_bundle(os.path.join(args.out, "host"))
        tvm_s = run.time(number=1, repeat=args.repeat)
        sess = ort_session(args.onnx)
        x = np.zeros(run.input_shape, np.float32)
        sess.run(None, {INPUT_NAME: x})
        ort_s = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            sess.run(None, {INPUT_NAME: x})
            ort_s.append(time.perf_counter() - t0)
        status = read_manifest(os.path.join(args.out, "host"))["tuning"]["status"]
        print(f"host inference, median of {args.repeat}: TVM ({status}) {np.median(tvm_s) * 1e3:.0f} ms, "
              f"ONNX Runtime {np.median(ort_s) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
