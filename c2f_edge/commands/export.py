"""`c2f-edge export`: checkpoint -> simplified ONNX + manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from c2f_edge.commands._common import add_model_args, model_from_args

ORDER = 10

EPILOG = """\
writes:
  OUT/model.onnx      simplified with onnxsim, one self-contained file (no .onnx.data sidecar)
  OUT/manifest.json   variant, weights sha256, input spec (name `input`, NCHW float32, ImageNet
                      mean/std), opset, node counts, tool versions, ONNX Runtime vs PyTorch parity

The export fails (and writes nothing) if onnxsim changes the outputs or ONNX Runtime disagrees with
PyTorch by more than 1e-4.

examples:
  c2f-edge export --weights synthetic
  c2f-edge export --checkpoint conv2former_n.pth --out build/onnx-n
  c2f-edge export --variant t --checkpoint conv2former_t.pth --dynamic-batch
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("export", help="export Conv2Former to a simplified ONNX file",
                       description="Trace Conv2Former to ONNX (torch dynamo exporter), simplify it with onnxsim "
                                   "and verify it in ONNX Runtime against PyTorch.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--opset", type=int, default=20, help="ONNX opset (default 20)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    b.add_argument("--dynamic-batch", action="store_true", help="export with a symbolic batch dimension")
    p.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--out", default="build/onnx", help="output directory (default build/onnx/)")
    p.set_defaults(func=run)


def run(args) -> int:
    from c2f_edge.core.errors import UsageError
    from c2f_edge.export.stage import ExportConfig, export_onnx

    if args.batch < 1 or args.image_size < 32 or args.image_size % 32:
        raise UsageError("--batch must be >= 1 and --image-size a multiple of 32",
                         hint="Conv2Former downsamples by 32")
    model, source = model_from_args(args)
    cfg = ExportConfig(variant=args.variant, checkpoint=args.checkpoint, weights=args.weights, seed=args.seed,
                       opset=args.opset, batch=args.batch, dynamic_batch=args.dynamic_batch,
                       image_size=args.image_size, out=args.out)
    path = export_onnx(cfg, model=model, source=source)
    m = json.loads((Path(args.out) / "manifest.json").read_text())
    p = m["parity"]["onnxruntime_vs_torch"]
    print(f"wrote {path} ({m['files']['model.onnx']['bytes'] / 1e6:.1f} MB, "
          f"{m['nodes']['before_simplify']} -> {m['nodes']['after_simplify']} nodes)")
    print(f"ONNX Runtime vs PyTorch on {p['n_inputs']} inputs: max abs diff {p['max_abs_diff']:.2e}, "
          f"top-1 agreement {p['top1_agreement']:.0%}")
    print(f"manifest: {Path(args.out) / 'manifest.json'}", file=sys.stderr)
    return 0
