"""`c2f-edge parity`: check artifacts against PyTorch fp32, and say where a mismatch starts."""

from __future__ import annotations

import argparse
import sys

from c2f_edge.commands._common import add_hash_arg, add_model_args

ORDER = 40

EPILOG = """\
Each ARTIFACT is a directory written by c2f-edge; its manifest says which backend runs it:
  ONNX export (build/onnx)            onnxruntime         fp32
  raw ONNX (--export-raw DIR)         onnxruntime[raw]    fp32 (checks the onnxsim step too)
  TVM bundle (build/host)             tvm-local           runs here
  TVM bundle (build/arm64, ...)       tvm-rpc             on a board: --rpc rpc://HOST:PORT,
                                                          rpc://tracker@HOST:PORT/KEY, or --rpc emulated
  TVM bundle (build/armv7, ...)       tvm-qemu            --backend tvm-qemu=build/armv7: the VM here, the
                                                          bundle's kernels under qemu user mode (no board,
                                                          no TVM runtime for the CPU needed; results only)
  TVM bundle (build/mali, adreno)     tvm-opencl          its OpenCL kernels on this machine's OpenCL device
                                                          (PoCL: `make setup-system`), host code from a twin
                                                          built here; or --rpc to a phone (results only)
  Core ML package (build/coreml)      coreml              NumPy MIL interpreter here, MLModel.predict on macOS
Or name a backend: --backend NAME=PATH (backends: torch, onnxruntime, tvm-local, tvm-rpc, tvm-qemu, tvm-opencl,
coreml).

The reference is PyTorch fp32 with the weights recorded in the first artifact's manifest (or --weights /
--checkpoint). Inputs: the photographs bundled with scikit-image, resized 256 and center-cropped 224 with
ImageNet normalization (nothing is downloaded); --images DIR for your own; --inputs random,stress to add
seeded noise and inputs whose activations run high (for fp16).

Metrics per backend: max/mean abs diff, max rel diff (relative to the largest reference logit), min cosine
similarity, top-1 agreement, top-5 overlap. Tolerances come by precision class (fp32, fp16, int8, int4,
palettized); override one with --tol fp16.max_abs=0.5 (keys: max_abs mean_abs max_rel cosine top1 top5
localize). A backend out of tolerance fails the run (exit code 2) and the harness compares module-boundary
activations (stem, downsamples, each block and its attn/mlp branch, head) to say where divergence starts.

Results: a Markdown table on stdout, --json PATH (schema c2f-edge.parity/1), and each artifact's
manifest.json under parity.harness.

examples:
  c2f-edge parity build/onnx build/host
  c2f-edge parity build/arm64 --rpc emulated -n 2
  c2f-edge parity --backend tvm-qemu=build/armv7 -n 1
  c2f-edge parity build/mali -n 1
  c2f-edge parity build/arm64 --rpc rpc://tracker@10.0.0.5:9190/rk3588
  c2f-edge parity build/coreml-fp16 --inputs photos,stress --tol fp16.max_abs=0.5 --json parity.json
"""


def register(sub) -> None:
    p = sub.add_parser("parity", help="check artifacts against PyTorch fp32 and localize mismatches",
                       description="Run the same inputs through PyTorch fp32 and every given artifact, compare "
                                   "the logits, and when a backend is out of tolerance find the first module "
                                   "whose output diverges.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                   help="artifact directories (default: build/onnx if it exists)")
    p.add_argument("--backend", action="append", default=[], metavar="NAME=PATH",
                   help="run PATH with the named backend (repeatable)")
    p.add_argument("--rpc", metavar="URL",
                   help="where TVM bundles for other machines run: rpc://HOST:PORT, "
                        "rpc://tracker@HOST:PORT/KEY or emulated")
    p.add_argument("--rpc-inputs", type=int, default=2, metavar="N",
                   help="inputs sent over RPC or to tvm-qemu (default 2: emulation is 10-500x slower)")
    p.add_argument("--inputs", default="photos",
                   help="comma-separated input sets: photos (default), random, stress")
    p.add_argument("--images", metavar="DIR", help="your own images instead of the bundled photos")
    p.add_argument("-n", "--num-inputs", type=int, default=None, metavar="N", help="inputs per set (default all)")
    p.add_argument("--input-seed", type=int, default=0, help="seed of the random and stress inputs (default 0)")
    p.add_argument("--tol", action="append", default=[], metavar="CLASS.KEY=VALUE",
                   help="override a tolerance, e.g. fp16.max_abs=0.5 (repeatable)")
    p.add_argument("--export-raw", metavar="DIR",
                   help="also export the raw (unsimplified) ONNX to DIR and check it with onnxruntime")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    p.add_argument("--no-localize", action="store_true", help="do not localize failures (faster)")
    p.add_argument("--no-manifest", action="store_true", help="do not record results in the artifacts' manifests")
    add_model_args(p)
    add_hash_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from c2f_edge.core.errors import UsageError
    from c2f_edge.parity import api
    from c2f_edge.parity.harness import raise_on_failure
    from c2f_edge.parity.report import markdown

    artifacts = list(args.artifacts)
    if not artifacts and not args.backend:
        if not Path("build/onnx/manifest.json").is_file():
            raise UsageError("nothing to check: no ARTIFACT given and build/onnx does not exist",
                             hint="run `c2f-edge export --weights synthetic` first, or pass artifact directories")
        artifacts = ["build/onnx"]
    explicit = []
    for item in args.backend:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise UsageError(f"bad --backend {item!r}", hint="write NAME=PATH, e.g. --backend tvm-local=build/host")
        explicit.append((name, path))
    result = api.check(
        artifacts, explicit=explicit, rpc=args.rpc, rpc_inputs=args.rpc_inputs,
        input_sets=[s.strip() for s in args.inputs.split(",") if s.strip()], images=args.images,
        n=args.num_inputs, input_seed=args.input_seed, tol=args.tol, export_raw=args.export_raw,
        localize=not args.no_localize, record=not args.no_manifest, json_path=args.json,
        reference={"variant": args.variant, "checkpoint": args.checkpoint, "weights": args.weights,
                   "seed": args.seed},
    )
    print(markdown(result))
    if args.json:
        print(f"wrote {args.json}", file=sys.stderr)
    raise_on_failure(result)
    return 0
