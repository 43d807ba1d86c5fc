"""`c2f-edge compile`: simplified ONNX -> TVM bundle (model.so + manifest + README) for a target."""

from __future__ import annotations

import sys

from c2f_edge.commands._common import add_hash_arg, add_model_args

ORDER = 20

EPILOG = """\
writes OUT (default build/<target>/):
  model.so        the model for the board, weights included, linked for the board's CPU
  manifest.json   target JSON, TVM/tool versions, input spec, sha256 of ONNX and model.so, tuning log, parity
  README.txt      how to load and run it on the board with the TVM runtime

model source (one of):
  --onnx PATH                          a model.onnx from `c2f-edge export`
  --weights synthetic | --checkpoint   export first (into the bundle's temp dir, removed afterwards)
  (nothing)                            build/onnx/model.onnx

linking: aarch64 and armv7 bundles are linked with zig (pip package `ziglang`, no system cross
toolchain); its first use per target builds a libc cache (~90 s) under ${C2F_EDGE_CACHE:-~/.cache/c2f-edge}.
Android needs the NDK ($ANDROID_NDK_HOME). --cross-compiler uses another linker.

tuning: a MetaSchedule log in tuning_logs/<target>/ (from `c2f-edge tune`) is applied when it matches
this TVM, target and model graph; otherwise the build is untuned (the manifest says why).

precision: --precision fp16 stores weights and activations in half precision and computes in it
(8 lanes per NEON register), for cores with fp16 arithmetic: ARMv8.2 and later (rpi5, jetson-orin;
another core via a target JSON with "+fullfp16"), or an x86 host with AVX512-FP16. The LayerNorm
statistics (they overflow fp16), the GELU's arithmetic, the classifier's sums, the input and the logits
stay fp32; the manifest lists what was kept and why. Parity judges it in the fp16 tolerance class. Half
the bundle size. On mali and adreno it is OpenCL half (cl_khr_fp16), with the conv sums also in fp32.

split reductions (fp32, CPU targets with num-cores): --split-reduction divides the input channels of
the convs whose weights outweigh their input and whose input is 4x their output (the MLP's fc2 in stages
3 and 4) between the target's cores, each summing the share the kernel before left in its own cache;
and the classifier's weight rows, each core streaming its own. It is on by default where a target file
says `split_reduction = true` (host: 2-3% faster end to end on a 2-core Xeon). The ARM targets take it
with --split-reduction: the emulated Pi 5 keeps parity and runs no more instructions, but no board has
timed it. --no-split-reduction turns it off. These kernels take no tuning record; the manifest's
tuning.kernels.split_reduction counts them.

examples:
  c2f-edge compile --target host --weights synthetic
  c2f-edge compile --target host --tuning-log none --no-split-reduction --out build/host-unsplit
  c2f-edge compile --target rpi4 --onnx build/onnx/model.onnx
  c2f-edge compile --target rpi5 --precision fp16 --verify emulated
  c2f-edge compile --target mali --precision fp16
  c2f-edge compile --target arm64 --cross-compiler aarch64-linux-gnu-g++
  c2f-edge compile --target '{"kind":"llvm","mtriple":"aarch64-linux-gnu","mcpu":"cortex-a55"}' --out build/a55
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("compile", help="compile the ONNX model with TVM into a bundle for a board",
                       description="Compile Conv2Former with TVM Relax for an ARM CPU or OpenCL GPU and write a "
                                   "deployable bundle. `c2f-edge targets` lists the targets.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, metavar="NAME|JSON",
                   help="target name (see `c2f-edge targets`) or a TVM target JSON")
    p.add_argument("--onnx", metavar="PATH", help="ONNX model from `c2f-edge export`")
    add_model_args(p)
    p.add_argument("--tuning-log", metavar="DIR|none",
                   help="MetaSchedule log to apply (default: tuning_logs/<target>/ if it fits; 'none': untuned)")
    p.add_argument("--cross-compiler", metavar="CMD",
                   help="link with CMD instead of zig, e.g. aarch64-linux-gnu-g++ (words split like a shell)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: half-precision weights and arithmetic, for cores with fp16 and Mali/Adreno (see below; "
                        "default fp32)")
    p.add_argument("--split-reduction", action=argparse.BooleanOptionalAction, default=None,
                   help="split the sums of the kernels that fit (two convs, the classifier) between the cores "
                        "(see below; default: the target's, on for host)")
    p.add_argument("--out", metavar="DIR", help="bundle directory (default build/<target>/)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--verify", default="auto", metavar="MODE",
                   help="run the bundle on photos after building and compare it with PyTorch fp32: auto (here "
                        "when it can: host bundles), local, emulated (aarch64 under qemu), rpc://HOST:PORT or "
                        "rpc://tracker@HOST:PORT/KEY (a board), none (default auto). A board that does not answer, or "
                        "a target the emulated board cannot run, is refused before the build")
    v.add_argument("--no-verify", dest="verify", action="store_const", const="none", help="same as --verify none")
    add_hash_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from c2f_edge.compile import LIBRARY, CompileConfig, compile_bundle
    from c2f_edge.core.artifacts import read_manifest

    if args.onnx and (args.weights or args.checkpoint):
        from c2f_edge.core.errors import UsageError

        raise UsageError("give either --onnx or --weights/--checkpoint, not both",
                         hint="--onnx compiles an exported model; --weights/--checkpoint export one first")
    if args.weights == "synthetic":
        from c2f_edge.models.weights import SYNTHETIC_WARNING

        print(f"warning: {SYNTHETIC_WARNING}", file=sys.stderr)
    cfg = CompileConfig(target=args.target, onnx=args.onnx, variant=args.variant, checkpoint=args.checkpoint,
                        weights=args.weights, seed=args.seed, tuning_log=args.tuning_log,
                        cross_compiler=args.cross_compiler, out=args.out, verify=args.verify,
                        precision=args.precision, split_reduction=args.split_reduction)
    out = compile_bundle(cfg)
    m = read_manifest(out)
    f = m["files"][LIBRARY]
    print(f"wrote {out / LIBRARY} ({f['bytes'] / 1e6:.1f} MB, {f['elf']}, {m['precision']['name']}) for {m['target']['name']} "
          f"in {m['timings_s']['total']:.0f} s")
    print(f"tuning: {m['tuning']['note']}")
    if m["config"].get("split_reduction"):
        print(f"split reductions: {m['tuning']['kernels'].get('split_reduction', 0)} kernels")
    par = m["parity"]
    if par.get("status") == "passed":
        for name, r in par.items():
            if isinstance(r, dict):
                print(f"verified ({name}, {r['device']}): max abs diff {r['max_abs_diff']:.2e} vs {r['reference']}, "
                      f"top-1 agreement {r['top1_agreement']:.0%} on {r['n_inputs']} photos")
    else:
        print(f"verification {par.get('status')}: {par.get('note')}")
    print(f"manifest: {out / 'manifest.json'}", file=sys.stderr)
    return 0
