"""`c2f-edge coreml`: convert to a Core ML ML Program (.mlpackage) for iOS, optionally compressed."""

from __future__ import annotations

import argparse
import json

from c2f_edge.commands._common import add_model_args, model_from_args

ORDER = 30

DESCRIPTION = """\
Convert Conv2Former to a Core ML ML Program (.mlpackage) for iOS, then check the saved program.

Writes OUT/model.mlpackage and OUT/manifest.json (sizes, times, measured deviations, and a map from
torch module names to MIL var names). Conversion runs from PyTorch (torch.export): coremltools has no
ONNX path, so this does not need `c2f-edge export` first.

Precision:
  fp16 (default)  weights and compute in fp16, outputs float32. The LayerNorm variance path stays fp32,
                  because (x - mean)^2 overflows fp16 once activations exceed ~256.
  fp32            for reference and parity checks (2x larger).
Input:
  tensor (default) float32 [1,3,224,224], already ImageNet-normalized (as for ONNX/TVM).
  image            an RGB image; normalization is inside the model and exact (1/255 and -mean in the
                   image preprocessing, 1/std folded into the first conv).
Compression (--compress), on top of --precision:
  none, int8 (iOS16+), int4 (per-block, iOS18+ only), palettize4, palettize6 (k-means; needs
  scikit-learn: pip install 'c2f-edge[palettize]').

The check: on Linux the saved package is read back with coremltools' MIL loader and run by a NumPy
interpreter (fp32, or fp16 emulation for fp16 packages) on real photos, against PyTorch fp32; with
compression, also against the uncompressed program. On macOS the parity harness uses MLModel.predict.

Examples:
  c2f-edge coreml --weights synthetic
  c2f-edge coreml --checkpoint conv2former_n.pth --input image --labels imagenet_classes.txt
  c2f-edge coreml --weights synthetic --ios 18 --compress int4 --out build/coreml-int4
"""


def register(sub) -> None:
    from c2f_edge.coreml.compress import COMPRESSIONS
    from c2f_edge.coreml.convert import INPUT_KINDS, IOS_VERSIONS, PRECISIONS

    p = sub.add_parser("coreml", help="convert to a Core ML .mlpackage for iOS (optionally compressed)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    g = p.add_argument_group("Core ML")
    # Values are validated by the library, so a bad one gives a one-line error naming the valid ones.
    g.add_argument("--ios", default="17", metavar="VERSION",
                   help=f"minimum deployment target: {', '.join(map(str, IOS_VERSIONS))} (default 17)")
    g.add_argument("--precision", default="fp16", metavar="P", help=f"{' or '.join(PRECISIONS)} (default fp16)")
    g.add_argument("--input", default="tensor", metavar="KIND",
                   help=f"{' or '.join(INPUT_KINDS)} (default tensor)")
    g.add_argument("--compress", default="none", metavar="MODE",
                   help=f"{', '.join(COMPRESSIONS)} (default none)")
    g.add_argument("--labels", metavar="FILE",
                   help="ImageNet class labels, one per line (1000 lines), stored in the model's metadata")
    g.add_argument("--check-images", type=int, default=3, metavar="N",
                   help="photos to check the saved package on, against PyTorch fp32 (default 3; 0 skips)")
    p.add_argument("--out", default="build/coreml", metavar="DIR", help="output directory (default build/coreml)")
    p.set_defaults(func=run)


def run(args) -> int:
    from c2f_edge.coreml.convert import CoreMLConfig, build_package, validate

    cfg = CoreMLConfig(variant=args.variant, checkpoint=args.checkpoint, weights=args.weights, seed=args.seed,
                       ios=args.ios, precision=args.precision, input=args.input, compress=args.compress,
                       labels=args.labels, out=args.out, check_images=args.check_images)
    validate(cfg)  # bad options fail here, before the model is loaded
    model, source = model_from_args(args)
    out = build_package(cfg, model=model, source=source)
    man = json.loads((out / "manifest.json").read_text())
    print(summary(man, out))
    return 0


def summary(man: dict, out) -> str:
    sizes, chk = man["sizes"], man.get("check") or {}
    lines = [(f"wrote {out}/{man['package']}  ({sizes['package_bytes'] / 1e6:.1f} MB, iOS{man['ios']}, "
              f"{man['precision']}, {man['input_kind']} input, compress={man['compress']['mode']})")]
    if "uncompressed_bytes" in sizes:
        lines.append(f"  size: {sizes['uncompressed_bytes'] / 1e6:.1f} MB uncompressed -> "
                     f"{sizes['package_bytes'] / 1e6:.1f} MB ({sizes['ratio']:.2f}x)")
    for key, label in (("vs_torch_fp32", "vs PyTorch fp32"), ("vs_uncompressed", "vs uncompressed package")):
        if key in chk:
            s = chk[key]
            lines.append(f"  {label} ({chk['mode']}, {len(chk['images'])} photos): max abs diff "
                         f"{s['max_abs_diff']:.3g} (logits up to {s['ref_max_abs']:.3g}), "
                         f"top-1 agreement {s['top1_agreement']:.0%}")
    if not chk:
        lines.append("  check skipped (--check-images 0)")
    t = man.get("times", {})
    steps = [k.removesuffix("_s") for k in t if not k.endswith("_cpu_s")]
    lines.append("  times (wall / cpu): " + ", ".join(
        f"{k} {t[k + '_s']:.1f}s / {t.get(k + '_cpu_s', float('nan')):.1f}s" for k in steps))
    return "\n".join(lines)
