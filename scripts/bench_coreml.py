#!/usr/bin/env python
"""Core ML export of Conv2Former-N per mode: conversion/compression time, package size, measured deviation.

A benchmark, not a test: times depend on the machine and on what else runs on it. Each mode is one
`c2f_edge.coreml.convert.build_package` run (the same code as `c2f-edge coreml`), checked on N photos by
the NumPy MIL interpreter (fp16 packages in fp16 emulation) against PyTorch fp32 and, when compressed,
against the uncompressed package.

    python scripts/bench_coreml.py [--modes fp32 fp16 int8 int4 palettize4 palettize6 image]
                                   [--images 3] [--out build/bench-coreml] [--json coreml.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# name -> CoreMLConfig fields
MODES = {
    "fp32": {"precision": "fp32"},
    "fp16": {"precision": "fp16"},
    "image": {"precision": "fp32", "input": "image"},
    "int8": {"precision": "fp16", "compress": "int8"},
    "int4": {"precision": "fp16", "compress": "int4", "ios": 18},
    "palettize4": {"precision": "fp16", "compress": "palettize4"},
    "palettize6": {"precision": "fp16", "compress": "palettize6"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--images", type=int, default=3, help="photos per check (default 3)")
    p.add_argument("--out", default="build/bench-coreml", help="where the packages go")
    p.add_argument("--json", help="also write the rows as JSON")
    args = p.parse_args()

    from c2f_edge.coreml.convert import CoreMLConfig, build_package
    from c2f_edge.models.weights import load_model

    model, source = load_model("n", weights="synthetic")
    rows = []
    for name in args.modes:
        t0 = time.perf_counter()
        out = build_package(CoreMLConfig(weights="synthetic", out=str(Path(args.out) / name),
                                         check_images=args.images, **MODES[name]), model=model, source=source)
        man = json.loads((out / "manifest.json").read_text())
        chk = man["check"]
        rows.append({
            "mode": name, "wall_s": round(time.perf_counter() - t0, 1), **man["times"],
            "mb": round(man["sizes"]["package_bytes"] / 1e6, 2),
            "ratio": man["sizes"].get("ratio"),
            "vs_torch_max_abs": chk["vs_torch_fp32"]["max_abs_diff"],
            "vs_torch_top1": chk["vs_torch_fp32"]["top1_agreement"],
            "vs_uncompressed_max_abs": chk.get("vs_uncompressed", {}).get("max_abs_diff"),
            "check_mode": chk["mode"],
        })
        print(json.dumps(rows[-1]), flush=True)
    cols = ["mode", "mb", "ratio", "convert_s", "compress_s", "check_s", "check_mode", "vs_torch_max_abs",
            "vs_torch_top1", "vs_uncompressed_max_abs"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


if __name__ == "__main__":
    main()
