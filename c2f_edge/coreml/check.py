"""Evaluate a saved .mlpackage: the `coreml` backend of the parity harness.

On Linux the package is read back with coremltools' own MIL loader and run by the NumPy interpreter in
`mil_eval` (fp32, or fp16 emulation). On macOS with the Core ML runtime, `MLModel.predict` runs it instead.

    from c2f_edge.coreml.check import run_package
    logits = run_package("build/coreml", x, mode="fp32")                 # x: float32 [1,3,224,224]
    logits, inter = run_package(path, x, return_intermediates=True)      # inter: MIL var name -> array
    module_map("build/coreml")                                           # torch module -> MIL var name
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import numpy as np

from c2f_edge.core.errors import ArtifactError, ShapeError, UnsupportedError, UsageError, first_line
from c2f_edge.coreml import mil_eval
from c2f_edge.coreml._ct import ct as _ct

BACKENDS = ("auto", "numpy", "coreml")
PACKAGE = "model.mlpackage"
WEIGHTS_FILE = Path("Data/com.apple.CoreML/weights/weight.bin")


def resolve_package(path: str | os.PathLike) -> Path:
    """Accept the .mlpackage itself or the artifact directory holding it."""
    p = Path(path)
    if p.is_dir() and p.suffix != ".mlpackage" and (p / PACKAGE).is_dir():
        p = p / PACKAGE
    if not p.is_dir() or not (p / "Manifest.json").is_file():
        raise ArtifactError(f"not an .mlpackage: {p}", hint="run `c2f-edge coreml --out DIR` and pass DIR")
    return p


def _check_against_manifest(pkg: Path) -> None:
    """The package against the hash `c2f-edge coreml` recorded beside it. A package without a manifest
    (being built, or from elsewhere) has nothing to check against; a Core ML manifest without the hash
    is refused, so that the check cannot switch itself off."""
    from c2f_edge.core.artifacts import MANIFEST, VERIFY_HASH_ENV, check_hash, manifest_or_empty

    manifest = manifest_or_empty(pkg.parent)
    recorded = manifest.get("package_sha256")
    if manifest.get("kind") == "coreml" and not recorded and os.environ.get(VERIFY_HASH_ENV) != "0":
        raise ArtifactError(f"{pkg.parent / MANIFEST} records no package_sha256 for {pkg.name}",
                            hint="re-create the package with `c2f-edge coreml`; --no-verify-hash skips this check")
    check_hash(pkg, recorded)


def coreml_runtime_available() -> bool:
    """True when coremltools can run models (macOS, with its compiled runtime)."""
    try:
        from coremltools.models import model as _m
    except ImportError:
        return False
    return getattr(_m, "_MLModelProxy", None) is not None


def select_backend(requested: str = "auto", platform: str | None = None, runtime: bool | None = None) -> str:
    """auto -> `coreml` (MLModel.predict) on macOS with the Core ML runtime, else `numpy` (the interpreter)."""
    platform = sys.platform if platform is None else platform
    if requested not in BACKENDS:
        raise UsageError(f"unknown Core ML check backend '{requested}'", hint=f"use one of {', '.join(BACKENDS)}")
    if requested == "numpy":
        return "numpy"
    can_predict = platform == "darwin" and (coreml_runtime_available() if runtime is None else runtime)
    if requested == "coreml" and not can_predict:
        raise UnsupportedError("MLModel.predict needs macOS with the Core ML runtime",
                               hint="use backend='numpy' (the NumPy MIL interpreter) on this machine")
    return "coreml" if can_predict else "numpy"


def load_program(path: str | os.PathLike):
    """Read a saved package back into a pymil Program with coremltools' own MIL loader."""
    ct = _ct()
    from coremltools.converters.mil.frontend.milproto.load import load

    pkg = resolve_package(path)
    _check_against_manifest(pkg)
    try:
        ml = ct.models.MLModel(str(pkg), skip_model_load=True)
        spec = ml.get_spec()
        return load(spec, spec.specificationVersion, file_weights_dir=ml.weights_dir)
    except Exception as e:  # protobuf and weight-file errors come in many types
        raise ArtifactError(f"cannot read {pkg}: {first_line(e)}",
                            hint="the package is corrupt or incomplete; re-create it with `c2f-edge coreml`") from e


@functools.lru_cache(maxsize=4)
def _interpreter(pkg: str, stamp: tuple, mode: str) -> mil_eval.Interpreter:
    return mil_eval.Interpreter(load_program(pkg), mode=mode)


def interpreter(path: str | os.PathLike, mode: str = "fp32") -> mil_eval.Interpreter:
    """A cached interpreter; reloaded when the package's files change."""
    pkg = resolve_package(path)
    stamp = tuple((str(f.relative_to(pkg)), f.stat().st_mtime_ns, f.stat().st_size)
                  for f in sorted(pkg.rglob("*")) if f.is_file())
    return _interpreter(str(pkg.resolve()), stamp, mode)


def _as_input(x: np.ndarray, shape) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[-1] == 3 and x.dtype == np.uint8:  # an HxWx3 photo for an image input
        x = x.transpose(2, 0, 1)[None]
    x = x.astype(np.float32)
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ShapeError(f"input shape {list(x.shape)} does not match the program's {list(shape)}",
                         hint="pass a float32 NCHW batch of one, e.g. [1,3,224,224]")
    return x


def run_package(path: str | os.PathLike, x: np.ndarray, mode: str = "fp32", return_intermediates=False,
                backend: str = "auto"):
    """Logits of a saved package for one input (float32 [1,3,H,W]; for an image input, RGB pixels 0..255).

    mode: "fp32" or "fp16" (interpreter emulation; on macOS: CPU-only vs. all compute units).
    return_intermediates: True for every MIL var, or an iterable of var names; then returns (logits, dict).
    """
    if mode not in mil_eval.MODES:
        raise UsageError(f"unknown check mode '{mode}'", hint=f"use one of {', '.join(mil_eval.MODES)}")
    which = select_backend(backend)
    if which == "coreml":
        if return_intermediates:
            raise UnsupportedError("MLModel.predict cannot return intermediate values",
                                   hint="use backend='numpy' to get named intermediates")
        return _predict_coreml(resolve_package(path), x, mode)
    interp = interpreter(path, mode)
    (name,) = interp.input_names
    shape = interp.fn.inputs[name].shape
    outputs, inter = interp.run({name: _as_input(x, shape)}, keep=return_intermediates)
    logits = outputs[interp.output_names[0]]
    return (logits, inter) if return_intermediates else logits


def _predict_coreml(pkg: Path, x: np.ndarray, mode: str) -> np.ndarray:  # pragma: no cover - macOS only
    ct = _ct()
    units = ct.ComputeUnit.CPU_ONLY if mode == "fp32" else ct.ComputeUnit.ALL
    ml = ct.models.MLModel(str(pkg), compute_units=units)
    spec = ml.get_spec()
    inp = spec.description.input[0]
    if inp.type.WhichOneof("Type") == "imageType":
        from PIL import Image

        arr = _as_input(x, None)[0].transpose(1, 2, 0)
        feed = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    else:
        feed = _as_input(x, None)
    out = ml.predict({inp.name: feed})
    return np.asarray(out[spec.description.output[0].name], dtype=np.float32)


def module_var_map(path: str | os.PathLike, module_out: dict[str, str], mode: str = "fp32") -> dict[str, str]:
    """Torch module path -> the MIL var holding its output, for modules whose output var survived
    conversion under its exported-node name (fusions rename or remove some)."""
    ops = interpreter(path, mode).ops  # cached: the check reuses it
    names = {v.name for op in ops if op.op_type != "const" for v in op.outputs}
    out = {}
    for mod, node in module_out.items():
        for cand in (node, f"{node}_cast_fp16", f"{node}_cast_fp32"):
            if cand in names:
                out[mod] = cand
                break
    return out


def module_map(artifact_dir: str | os.PathLike) -> dict[str, str]:
    """The `mil_vars_by_module` section of a `c2f-edge coreml` manifest."""
    p = Path(artifact_dir)
    if p.suffix == ".mlpackage":
        p = p.parent
    man = p / "manifest.json"
    if not man.is_file():
        raise ArtifactError(f"no manifest.json in {p}", hint="pass the --out directory of `c2f-edge coreml`")
    return json.loads(man.read_text()).get("mil_vars_by_module", {})
