"""torch -> Core ML ML Program (.mlpackage), with exact image normalization and fp16-safe LayerNorm.

Conversion path: `torch.export` + `run_decompositions({})`, not `torch.jit.trace`. Why:
- TorchScript is in maintenance mode in torch 2.x; `torch.export` is the supported capture path.
- Every exported node keeps `nn_module_stack`, and coremltools names MIL vars after the exported nodes,
  so the saved program's vars can be mapped back to torch module names (`mil_vars_by_module` in the
  manifest), which the parity harness uses to localize a divergence. Traced graphs only carry debug names.
- `run_decompositions({})` lowers to the core ATen set coremltools' ExportedProgram frontend expects,
  while keeping composite ops it maps directly (gelu, conv2d).
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from c2f_edge.core.artifacts import IMAGENET_MEAN, IMAGENET_STD, atomic_dir, input_spec, new_manifest
from c2f_edge.core.errors import ArtifactError, ExportError, OutputMismatchError, UsageError, first_line
from c2f_edge.core.metrics import judge, logit_metrics, tolerances
from c2f_edge.core.onnx_file import INPUT_NAME, OUTPUT_NAME
from c2f_edge.coreml import compress as _compress
from c2f_edge.coreml._ct import ct as _ct
from c2f_edge.coreml._ct import private_tempdir, quiet
from c2f_edge.coreml.compress import tolerance_class

IOS_VERSIONS = (16, 17, 18)
PRECISIONS = ("fp16", "fp32")
INPUT_KINDS = ("tensor", "image")
PACKAGE = "model.mlpackage"
INPUT_NAMES = {"tensor": INPUT_NAME, "image": "image"}
STEM_CONV = "downsample_layers.0.0"


@dataclass
class CoreMLConfig:
    variant: str = "n"
    checkpoint: str | None = None
    weights: str | None = None  # "synthetic"
    seed: int = 0
    ios: int | str = 17
    precision: str = "fp16"
    input: str = "tensor"
    compress: str = "none"
    labels: str | None = None
    out: str = "build/coreml"
    check_images: int = 3  # photos to check the saved package on (0: skip the check)
    image_size: int = 224
    _labels: list[str] = field(default_factory=list, repr=False)


def validate(cfg: CoreMLConfig, num_classes: int = 1000) -> CoreMLConfig:
    """Reject bad options before any work, with one-line errors."""
    try:
        ios = int(str(cfg.ios).lower().removeprefix("ios"))
    except ValueError:
        ios = None
    if ios not in IOS_VERSIONS:
        raise UsageError(f"unknown iOS version '{cfg.ios}'",
                         hint=f"--ios takes one of {', '.join(map(str, IOS_VERSIONS))}")
    cfg.ios = ios
    if cfg.precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{cfg.precision}'", hint=f"--precision takes {' or '.join(PRECISIONS)}")
    if cfg.input not in INPUT_KINDS:
        raise UsageError(f"unknown input kind '{cfg.input}'", hint=f"--input takes {' or '.join(INPUT_KINDS)}")
    _compress.validate(cfg.compress, ios)
    if cfg.check_images < 0:
        raise UsageError("--check-images must be >= 0", hint="pass 0 to skip the check")
    if cfg.labels:
        cfg._labels = read_labels(cfg.labels, num_classes)
    return cfg


def read_labels(path: str | os.PathLike, num_classes: int = 1000) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"labels file not found: {p}", hint="pass a text file with one class label per line")
    try:
        labels = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise ArtifactError(f"labels file {p} is not UTF-8 text", hint="one class label per line") from e
    while labels and not labels[-1]:
        labels.pop()
    if len(labels) != num_classes or not all(labels):
        raise UsageError(f"labels file {p} has {len(labels)} lines (some empty: {not all(labels)}), "
                         f"expected {num_classes} non-empty labels",
                         hint="one label per line, in class-index order")
    return labels


# ---------------------------------------------------------------------------------------------------
# Model preparation (on a copy: the model's own semantics stay untouched)

def fold_normalization(model):
    """Return a copy whose stem conv takes `pixels/255 - mean` instead of `(pixels/255 - mean) / std`.

    Core ML's ImageType applies one scalar scale and a per-channel bias, so the per-channel 1/std is folded
    into the first conv's weights: W'[:, c] = W[:, c] / std[c]. This is exact (up to fp32 rounding of W/std),
    including at the borders: the conv zero-pads its input, and the input here is already mean-subtracted
    (ImageType's bias runs before the conv), so a padded zero means "normalized value 0" in both pipelines,
    and 0 / std = 0. (Folding the mean into a conv bias instead would break at the zero-padded borders.)
    The stem conv must have no bias and zero padding; both are checked.
    """
    import torch

    m = copy.deepcopy(model).eval()
    conv = m.get_submodule(STEM_CONV)
    if not isinstance(conv, torch.nn.Conv2d) or conv.in_channels != 3:
        raise ExportError(f"{STEM_CONV} is not a 3-channel Conv2d", hint="image input needs the Conv2Former stem")
    if conv.padding_mode != "zeros":
        raise ExportError(f"{STEM_CONV} pads with '{conv.padding_mode}', the std fold needs zero padding")
    if conv.bias is not None:
        # A bias is unaffected by the fold (it adds after the conv), but the official stem has none.
        pass
    std = torch.tensor(IMAGENET_STD, dtype=conv.weight.dtype)
    with torch.no_grad():
        conv.weight.div_(std[None, :, None, None])
    return m


def export_program(model, image_size: int = 224):
    """torch.export the model, and map each module to the exported node holding its output."""
    import torch

    example = torch.zeros(1, 3, image_size, image_size)
    try:
        ep = torch.export.export(model, (example,)).run_decompositions({})
    except Exception as e:  # torch.export raises many types
        raise ExportError(f"torch.export failed: {first_line(e)}",
                          hint="run with -v for the traceback") from e
    module_out: dict[str, str] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or "getitem" in node.name:
            continue
        for path, _ in (node.meta.get("nn_module_stack") or {}).values():
            if path:
                module_out[path] = node.name  # the last node inside a module is its output
    # The graph's result becomes the program output, which conversion renames to OUTPUT_NAME.
    (result,) = next(n for n in ep.graph.nodes if n.op == "output").args[0]
    module_out = {k: OUTPUT_NAME if v == result.name else v for k, v in module_out.items()}
    return ep, module_out


def keep_variance_fp32(op) -> bool:
    """fp16 op selector: False for the LayerNorm variance path, which then stays in fp32.

    The channels-first LayerNorm lowers to reduce_mean/sub/pow/reduce_mean/add/sqrt/real_div. In fp16,
    `pow(x - mean, 2)` overflows (> 65504) once |x - mean| > 256, and the norm silently outputs its bias.
    Keeping pow, the mean of its output, +eps and sqrt in fp32 fixes that at the cost of a few casts on
    small tensors (all but pow act on one channel); the real_div then gets the std back in fp16, which
    cannot overflow for any fp16-representable input.
    """
    return not _in_variance_path(op)


def _producer(v):
    return getattr(v, "op", None)


def _in_variance_path(op) -> bool:
    t = op.op_type
    if t == "pow":
        return True
    ins = [_producer(v) for v in op.inputs.values() if not isinstance(v, (list, tuple))]
    ins = [p for p in ins if p is not None]
    if t == "reduce_mean":
        return any(p.op_type == "pow" for p in ins)
    if t == "add":
        return any(p.op_type == "reduce_mean" and _in_variance_path(p) for p in ins)
    if t in ("sqrt", "rsqrt"):
        return any(p.op_type in ("add", "reduce_mean") and _in_variance_path(p) for p in ins)
    return False


def convert_module(model, cfg: CoreMLConfig, fp16_selector=keep_variance_fp32):
    """Convert a (prepared) torch module to an in-memory MLModel. Returns (mlmodel, module_out_map).

    `fp16_selector=None` gives coremltools' default (everything fp16): the naive path, kept for tests.
    """
    with quiet():
        return _convert_module(model, cfg, fp16_selector)


def _convert_module(model, cfg, fp16_selector):
    ct = _ct()
    ep, module_out = export_program(model, cfg.image_size)
    shape = (1, 3, cfg.image_size, cfg.image_size)
    name = INPUT_NAMES[cfg.input]
    if cfg.input == "image":
        inp = ct.ImageType(name=name, shape=shape, scale=1 / 255.0, bias=[-m for m in IMAGENET_MEAN],
                           color_layout=ct.colorlayout.RGB)
    else:
        inp = ct.TensorType(name=name, shape=shape, dtype=np.float32)
    if cfg.precision == "fp32":
        precision = ct.precision.FLOAT32
    else:
        precision = ct.transform.FP16ComputePrecision(op_selector=fp16_selector)
    target = getattr(ct.target, f"iOS{cfg.ios}")
    try:
        ml = ct.convert(ep, convert_to="mlprogram", inputs=[inp],
                        # float32 for consumers, whatever the compute precision.
                        outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                        minimum_deployment_target=target, compute_precision=precision,
                        skip_model_load=sys.platform != "darwin")
    except Exception as e:
        raise ExportError(f"coremltools conversion failed: {first_line(e)}",
                          hint="run with -v for the traceback") from e
    return ml, module_out


def set_metadata(ml, cfg: CoreMLConfig, source, variant_desc: str) -> None:
    from c2f_edge import __version__

    kind = "synthetic (untrained) weights" if source.kind == "synthetic" else "checkpoint weights"
    ml.short_description = f"Conv2Former-{cfg.variant.upper()} ImageNet-1k classifier ({kind}). {variant_desc}"
    ml.author = "Conv2Former: Hou et al. (HVision-NKU); converted by c2f-edge"
    ml.license = "Conv2Former code and weights: see github.com/HVision-NKU/Conv2Former; converter: Apache-2.0"
    ml.version = __version__
    name = INPUT_NAMES[cfg.input]
    if cfg.input == "image":
        ml.input_description[name] = (f"RGB image, {cfg.image_size}x{cfg.image_size}, resized (short side "
                                      f"{round(cfg.image_size * 256 / 224)}) and center-cropped; ImageNet "
                                      "normalization is inside the model")
    else:
        ml.input_description[name] = ("float32 [1,3,H,W] NCHW RGB, ImageNet-normalized: "
                                      f"(pixel/255 - {list(IMAGENET_MEAN)}) / {list(IMAGENET_STD)}")
    ml.output_description[OUTPUT_NAME] = "float32 [1,1000] ImageNet-1k logits (apply softmax for probabilities)"
    meta = {
        "com.c2f-edge.variant": cfg.variant,
        "com.c2f-edge.weights": source.kind,
        "com.c2f-edge.weights_sha256": source.sha256,
        "com.c2f-edge.precision": cfg.precision,
        "com.c2f-edge.input": cfg.input,
        "com.c2f-edge.compress": cfg.compress,
        "com.c2f-edge.normalization_mean": ",".join(map(str, IMAGENET_MEAN)),
        "com.c2f-edge.normalization_std": ",".join(map(str, IMAGENET_STD)),
    }
    if cfg._labels:
        # Labels as metadata, not a ClassifierConfig: that would replace the float32 logits tensor with a
        # class->score dictionary, which the parity harness and most app code do not want.
        meta["com.c2f-edge.labels"] = "\n".join(cfg._labels)
    ml.user_defined_metadata.update(meta)


# ---------------------------------------------------------------------------------------------------
# The pipeline

def package_size(path: str | os.PathLike) -> int:
    p = Path(path)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def _check_inputs(cfg: CoreMLConfig, n: int):
    """Photos as (package inputs, torch inputs): pixels for image input, normalized tensors otherwise."""
    from c2f_edge.core.images import normalize, sample_photos

    photos = sample_photos(n, size=cfg.image_size)
    pkg, ref = [], []
    for img in photos.values():
        x = normalize(img)[None]
        ref.append(x)
        pkg.append(img.transpose(2, 0, 1)[None].astype(np.float32) if cfg.input == "image" else x)
    return list(photos), pkg, ref


# A few photos cannot judge top-1/top-5 agreement in a class that allows flips (the synthetic model's
# top-1 margins are a few hundredths): `c2f-edge parity`, on more inputs, judges those.
BUILD_CHECKS = ("max_abs", "mean_abs", "max_rel", "cosine")


def judge_package(got: list[np.ndarray], ref: list[np.ndarray], precision: str) -> dict:
    """The saved package against PyTorch fp32 in its tolerance class; OutputMismatchError outside it."""
    tol = {k: v for k, v in tolerances()[precision].items() if k in BUILD_CHECKS}
    metrics = {k: v for k, v in logit_metrics(np.concatenate(ref), np.concatenate(got)).items()
               if k != "per_input_max_abs_diff"}
    failures = judge(metrics, tol)
    if failures:
        raise OutputMismatchError(f"the saved package ({precision}) disagrees with PyTorch fp32 beyond its "
                                  f"tolerance class: {'; '.join(failures)}",
                                  hint="a stronger compression or another precision may fit; "
                                       "`c2f-edge parity` shows every metric")
    return {"precision": precision, "tolerance": tol, "metrics": metrics, "passed": True}


def _stats(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Deviation of `a` from the reference `b`, with the reference's scale and top-1 margin to judge it by
    (synthetic weights give logits within ~2.3 and top-1 margins of a few hundredths)."""
    diffs = [float(np.max(np.abs(x - y))) for x, y in zip(a, b)]
    top1 = [int(np.argmax(x)) == int(np.argmax(y)) for x, y in zip(a, b)]
    margins = [float(np.diff(np.sort(y.ravel())[-2:])[0]) for y in b]
    return {"max_abs_diff": max(diffs), "per_image_max_abs_diff": diffs,
            "top1_agreement": sum(top1) / len(top1),
            "ref_max_abs": max(float(np.abs(y).max()) for y in b), "ref_min_top1_margin": min(margins)}


class _Timer:
    """Wall and CPU seconds of a step (CPU time is the fairer number on a shared machine)."""

    def __init__(self, times: dict, key: str):
        self.times, self.key = times, key

    def __enter__(self):
        import time

        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        import time

        # Accumulates, so one step can be timed in parts.
        for k, dt in ((f"{self.key}_s", time.perf_counter() - self.t0),
                      (f"{self.key}_cpu_s", time.process_time() - self.c0)):
            self.times[k] = round(self.times.get(k, 0.0) + dt, 2)


def build_package(cfg: CoreMLConfig, model=None, source=None) -> Path:
    """Convert, compress, save and check. Writes OUT/model.mlpackage and OUT/manifest.json; returns OUT."""
    import torch

    from c2f_edge.core.progress import Stages
    from c2f_edge.coreml import check
    from c2f_edge.models import variant_info
    from c2f_edge.models.weights import load_model

    validate(cfg, num_classes=1000 if model is None else info_num_classes(model))
    comp = _compress.get(cfg.compress)
    info = variant_info(cfg.variant)
    n_check = cfg.check_images
    stages = Stages(3 + (comp.name != "none") + (n_check > 0))
    out = Path(cfg.out)
    times = {}
    with private_tempdir() as scratch, atomic_dir(out) as tmp:
        with stages.step(f"{'loading' if model is None else 'preparing'} Conv2Former-{info.name.upper()}"):
            if model is None:
                model, source = load_model(cfg.variant, checkpoint=cfg.checkpoint, weights=cfg.weights,
                                           seed=cfg.seed)
            prepared = fold_normalization(model) if cfg.input == "image" else model
        with stages.step(f"converting to an iOS{cfg.ios} ML Program ({cfg.precision}, {cfg.input} input)"), \
                _Timer(times, "convert"):
            ml, module_out = convert_module(prepared, cfg)
            set_metadata(ml, cfg, source, info.description)
        base_pkg = None
        if comp.name != "none":
            base_pkg = scratch / "uncompressed.mlpackage"
            ml.save(str(base_pkg))
            with stages.step(f"compressing weights ({comp.name})"):
                try:
                    with _Timer(times, "compress"), quiet():
                        ml = comp.apply(ml, _ct())
                except Exception as e:
                    raise ExportError(f"compression '{comp.name}' failed: {first_line(e)}",
                                      hint="run with -v for the traceback") from e
        pkg = tmp / PACKAGE
        with stages.step(f"saving {PACKAGE}"):
            ml.save(str(pkg))
        del ml
        mode = "fp16" if cfg.precision == "fp16" else "fp32"
        result = {}
        with _Timer(times, "check"):
            mil_map = check.module_var_map(pkg, module_out, mode)  # also loads the program for the check
        if n_check:
            with stages.step(f"checking the saved program on {n_check} photos (NumPy MIL interpreter)"), \
                    _Timer(times, "check"):
                names, xs, refs = _check_inputs(cfg, n_check)
                with torch.no_grad():
                    torch_out = [model(torch.from_numpy(r)).numpy() for r in refs]
                got = [check.run_package(pkg, x, mode=mode, backend="numpy") for x in xs]
                result = {"images": names, "mode": mode, "vs_torch_fp32": _stats(got, torch_out),
                          "judged": judge_package(got, torch_out, tolerance_class(comp.name, cfg.precision))}
                if base_pkg is not None:
                    base = [check.run_package(base_pkg, x, mode=mode, backend="numpy") for x in xs]
                    result["vs_uncompressed"] = _stats(got, base)
                    result["uncompressed_vs_torch_fp32"] = _stats(base, torch_out)
        sizes = {"package_bytes": package_size(pkg)}
        if base_pkg is not None:
            sizes["uncompressed_bytes"] = package_size(base_pkg)
            sizes["ratio"] = round(sizes["package_bytes"] / sizes["uncompressed_bytes"], 4)
        from c2f_edge.core.artifacts import sha256_tree, write_json

        manifest = new_manifest(
            "coreml",
            model={"variant": info.name, "weights": source.to_dict()},
            package=PACKAGE, package_sha256=sha256_tree(pkg),
            ios=cfg.ios, precision=cfg.precision, input_kind=cfg.input,
            input=(input_spec((1, 3, cfg.image_size, cfg.image_size), name=INPUT_NAMES["tensor"])
                   if cfg.input == "tensor" else
                   {"name": INPUT_NAMES["image"], "kind": "image", "color_layout": "RGB",
                    "shape": [1, 3, cfg.image_size, cfg.image_size],
                    "preprocessing": {"scale": "1/255", "bias": [-m for m in IMAGENET_MEAN],
                                      "std_folded_into": STEM_CONV, "std": list(IMAGENET_STD)}}),
            output={"name": OUTPUT_NAME, "shape": [1, info_num_classes(model)], "dtype": "float32"},
            compress={"mode": comp.name, "description": comp.description},
            fp16_policy=("LayerNorm variance path (pow, reduce_mean, add eps, sqrt) kept in fp32"
                         if cfg.precision == "fp16" else None),
            labels=bool(cfg._labels),
            sizes=sizes, times=times, check=result,
            mil_vars_by_module=mil_map,
        )
        write_json(tmp / "manifest.json", manifest)
    return out


def info_num_classes(model) -> int:
    return int(getattr(model, "num_classes", 1000))
