"""Stage 2: simplified ONNX -> a deployable TVM bundle for one target.

    build/<target>/model.so       the compiled model, weights included, linked for the board
    build/<target>/manifest.json  target JSON, versions, input spec, hashes, tuning, parity, timings
    build/<target>/README.txt     how to run it on the board

`load_bundle` / `load_remote_bundle` give a numpy-in, numpy-out callable for other stages.
Verification after the build is a registry (`VERIFIERS`): "local" runs host bundles here; other stages
can register more (e.g. an emulated board) with `register_verifier`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from c2f_edge.core.artifacts import (
    MANIFEST,
    atomic_dir,
    input_spec,
    new_manifest,
    read_manifest,
    sha256_file,
    tool_versions,
    write_json,
)
from c2f_edge.core.errors import ArtifactError, OutputMismatchError, UsageError
from c2f_edge.core.progress import Stages

BUNDLE_KIND = "tvm-bundle"
LIBRARY = "model.so"
# TVM and ONNX Runtime in fp32 reorder reductions differently; same tolerance as the export's check.
PARITY_ATOL = 1e-4
WEIGHTS_NOTE = ("The weights are compiled into model.so (one file to copy, no weights/graph mismatch possible, "
                "and TVM folds weight-only computations at build time). New weights mean a new compile; "
                "a tuning log still applies because it is keyed on the graph, not the weight values.")


@dataclass
class CompileConfig:
    target: str
    onnx: str | None = None
    variant: str = "n"
    checkpoint: str | None = None
    weights: str | None = None
    seed: int = 0
    tuning_log: str | None = None  # None: look in tuning_logs/<target>/; "none": untuned; or a directory
    cross_compiler: str | None = None
    out: str | None = None  # default build/<target>
    verify: str = "auto"  # "auto" (local when the bundle runs here), "none", a VERIFIERS name or "rpc://..."


# --- verification hook -------------------------------------------------------------------------------

@dataclass
class VerifyContext:
    bundle_dir: Path  # the bundle being written (model.so and a draft manifest are in it)
    manifest: dict
    onnx_path: Path
    spec: object  # c2f_edge.targets.TargetSpec


VERIFIERS: dict[str, Callable[[VerifyContext], dict]] = {}
# Modes with an argument, by prefix: "rpc://..." -> factory(mode) -> verifier (may raise UsageError early).
VERIFIER_SCHEMES: dict[str, Callable[[str], Callable[[VerifyContext], dict]]] = {}
# Modules that register more verifiers when imported (optional: skipped if they are missing).
VERIFIER_MODULES = ("c2f_edge.parity.verify",)


def register_verifier(name: str):
    """Register `fn(ctx: VerifyContext) -> dict` (recorded under manifest["parity"][name]).

    It raises OutputMismatchError when the bundle disagrees with the reference: no bundle is then written.
    """
    def deco(fn):
        VERIFIERS[name] = fn
        return fn
    return deco


def register_verifier_scheme(prefix: str, factory) -> None:
    VERIFIER_SCHEMES[prefix] = factory


def _load_verifier_modules() -> None:
    import importlib

    for name in VERIFIER_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        # The parity stage offers `verifier_for("rpc://...")`; expose it as a scheme unless it did itself.
        if hasattr(mod, "verifier_for"):
            VERIFIER_SCHEMES.setdefault("rpc://", mod.verifier_for)


def resolve_verifier(mode: str):
    """'auto' / 'none' stay as they are; anything else -> a verifier function, or UsageError (before building)."""
    if mode in ("auto", "none"):
        return mode
    if mode not in VERIFIERS:
        _load_verifier_modules()
    if mode in VERIFIERS:
        return VERIFIERS[mode]
    for prefix, factory in VERIFIER_SCHEMES.items():
        if mode.startswith(prefix):
            return factory(mode)
    raise UsageError(f"unknown --verify mode {mode!r}",
                     hint=f"one of: auto, none, {', '.join([*VERIFIERS, *(p + '...' for p in VERIFIER_SCHEMES)])}")


def reference_outputs(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime on the exact ONNX that was compiled (the export checked it against PyTorch)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def check_parity(ref: np.ndarray, out: np.ndarray, what: str, atol: float = PARITY_ATOL) -> dict:
    from c2f_edge.export.stage import compare

    res = {**compare(ref, out), "tolerance": atol}
    if not res["max_abs_diff"] <= atol or res["top1_agreement"] < 1:
        raise OutputMismatchError(
            f"{what} disagrees with ONNX Runtime: max abs diff {res['max_abs_diff']:.3g} (tolerance {atol}), "
            f"top-1 agreement {res['top1_agreement']:.0%}",
            hint="run with -v; try --tuning-log none to rule out a bad tuning log, and report it")
    return res


@register_verifier("local")
def verify_local(ctx: VerifyContext) -> dict:
    from c2f_edge.export.stage import parity_inputs

    shape = ctx.manifest["input"]["shape"]
    x = parity_inputs(2, size=shape[-1])
    run = load_bundle(ctx.bundle_dir)
    t0 = time.perf_counter()
    out = run(x)
    per_inference = (time.perf_counter() - t0) / len(x)
    res = check_parity(reference_outputs(ctx.onnx_path, x), out, "the compiled bundle")
    return {**res, "reference": "onnxruntime", "device": "this machine",
            "seconds_per_inference": round(per_inference, 4),
            "timing_note": "one cold run per input, for orientation only; use `c2f-edge profile` for latency"}


def _verify(mode: str, verifier, ctx: VerifyContext) -> dict:
    if verifier == "none":
        return {"status": "skipped", "note": "--no-verify"}
    if verifier == "auto":
        if not ctx.spec.runs_here:
            return {"status": "not run",
                    "note": f"target {ctx.spec.name} does not run on this machine; check it on the board "
                            "(or an emulated one) with --verify emulated|rpc://... or `c2f-edge parity`"}
        mode, verifier = "local", VERIFIERS["local"]
    if verifier is verify_local and not ctx.spec.runs_here:
        raise UsageError(f"--verify local: a {ctx.spec.name} bundle cannot run on this machine",
                         hint="use --verify emulated or rpc://..., or build --target host")
    return {"status": "passed", mode: verifier(ctx)}


# --- loading bundles ----------------------------------------------------------------------------------

class BundleRunner:
    """`runner(x)`: float32 NCHW numpy -> logits numpy, one VM call per image."""

    def __init__(self, vm, device, manifest: dict):
        self.vm, self.device, self.manifest = vm, device, manifest
        self.input_shape = tuple(manifest["input"]["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import tvm

        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape[1:]:
            from c2f_edge.core.errors import ShapeError

            raise ShapeError(f"input shape {tuple(x.shape)} does not fit the bundle's {self.input_shape}",
                             hint="resize/crop the images to the size the model was exported with")
        b = self.input_shape[0]
        outs = [self.vm["main"](tvm.runtime.tensor(x[i:i + b], self.device)).numpy() for i in range(0, len(x), b)]
        return np.concatenate(outs)

    def time(self, number: int = 1, repeat: int = 3) -> list[float]:
        """Seconds per inference of `main` on a zero input, by TVM's timer (runs where the device is)."""
        import tvm

        x = tvm.runtime.tensor(np.zeros(self.input_shape, np.float32), self.device)
        res = self.vm.time_evaluator("main", self.device, number=number, repeat=repeat)(x)
        return [float(t) for t in res.results]


def _vm_class():
    from tvm.runtime.vm import VirtualMachine

    return VirtualMachine


def read_bundle_manifest(bundle_dir) -> dict:
    m = read_manifest(bundle_dir)
    if m.get("kind") != BUNDLE_KIND:
        raise ArtifactError(f"{bundle_dir} is a {m.get('kind')!r} artifact, not a TVM bundle",
                            hint="point at a directory written by `c2f-edge compile`")
    if not (Path(bundle_dir) / LIBRARY).is_file():
        raise ArtifactError(f"{bundle_dir} has no {LIBRARY}", hint="re-run `c2f-edge compile`")
    return m


def load_bundle(bundle_dir, device=None) -> BundleRunner:
    """Load a bundle that runs on this machine (a host bundle). device: a tvm Device, default from manifest."""
    import tvm

    bundle_dir = Path(bundle_dir)
    m = read_bundle_manifest(bundle_dir)
    if device is None:
        device = tvm.device(m["runtime"]["device"], 0)
    try:
        lib = tvm.runtime.load_module(str(bundle_dir / LIBRARY))
    except Exception as e:  # noqa: BLE001 - dlopen/FFI errors come as several types
        raise ArtifactError(f"cannot load {bundle_dir / LIBRARY} here: {str(e).strip().splitlines()[-1][:200]}",
                            hint=f"it was built for {m['target']['name']}; run it there or use load_remote_bundle")
    return BundleRunner(_vm_class()(lib, device), device, m)


def load_remote_bundle(bundle_dir, session, device=None) -> BundleRunner:
    """Upload model.so over a TVM RPC session (tvm.rpc.connect(...) or a tracker request) and load it there."""
    bundle_dir = Path(bundle_dir)
    m = read_bundle_manifest(bundle_dir)
    remote_name = f"c2f_{m['files'][LIBRARY]['sha256'][:12]}.so"
    session.upload(str(bundle_dir / LIBRARY), target=remote_name)
    lib = session.load_module(remote_name)
    if device is None:
        device = session.device(m["runtime"]["device"], 0)
    return BundleRunner(_vm_class()(lib, device), device, m)


# --- the stage ----------------------------------------------------------------------------------------

def _onnx_source(cfg: CompileConfig) -> tuple[str, Path | None]:
    """('given'|'export'|'default', path)."""
    if cfg.onnx:
        return "given", Path(cfg.onnx)
    if cfg.weights or cfg.checkpoint:
        return "export", None
    default = Path("build/onnx/model.onnx")
    if default.is_file():
        return "default", default
    raise ArtifactError("no ONNX model to compile (no --onnx, and build/onnx/model.onnx does not exist)",
                        hint="pass --onnx PATH, or --weights synthetic / --checkpoint PATH to export one first")


def _onnx_manifest(onnx_path: Path) -> dict:
    try:
        m = read_manifest(onnx_path.parent)
    except ArtifactError:
        return {}
    return m if m.get("kind") == "onnx" else {}


def _output_shape(onnx_model, batch: int) -> list[int]:
    dims = onnx_model.graph.output[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else batch for d in dims]


def _readme(spec, m: dict) -> str:
    gpu = m["runtime"]["device"] != "cpu"
    dev = "tvm.opencl()" if gpu else "tvm.cpu()"
    shape = m["input"]["shape"]
    norm = m["input"]["normalization"]
    if spec.linker == "ndk":
        install = ("Android: load model.so with TVM's Android runtime (tvm4j / the C++ runtime built with the "
                   "NDK); the Python lines below show the calls.")
    elif (spec.triple or "").startswith("arm") and "aarch64" not in (spec.triple or ""):
        install = ("32-bit ARM: PyPI has no apache-tvm wheel for armv7; build the TVM runtime from source on the "
                   "board (cmake, runtime only), at the same TVM version.")
    else:
        install = f"pip install apache-tvm=={m['versions'].get('apache-tvm')} " \
                  f"apache-tvm-ffi=={m['versions'].get('apache-tvm-ffi')} numpy"
    return f"""\
Conv2Former TVM bundle for target `{spec.name}` ({spec.description})

Files: model.so ({m['files'][LIBRARY]['bytes'] / 1e6:.1f} MB, {m['files'][LIBRARY]['elf']}), manifest.json, README.txt

On the board (Python 3):
  {install}
  (TVM_USE_RUNTIME_LIB=1 makes `import tvm` load only the runtime: much faster on small boards)
  Threads: set TVM_NUM_THREADS to the cores to use before `import tvm`. Without it TVM uses all
  hardware threads on ARM but only half of them on x86 (one thread on a 2-vCPU machine).

  import numpy as np, tvm
  from tvm.runtime.vm import VirtualMachine
  vm = VirtualMachine(tvm.runtime.load_module("model.so"), {dev})
  x = np.zeros({tuple(shape)}, np.float32)   # your image: RGB, /255, minus mean, divided by std, NCHW
  logits = vm["main"](tvm.runtime.tensor(x, {dev})).numpy()   # shape {m['output']['shape']}
{"  The board needs an OpenCL driver (libOpenCL.so) for the GPU." if gpu else ""}
Input `{m['input']['name']}`: float32 {shape}, mean {norm['mean']}, std {norm['std']}.
Output `{m['output']['name']}`: ImageNet-1k logits (no softmax).

Weights: {WEIGHTS_NOTE}

Tuning: {m['tuning']['note']}
"""


def compile_bundle(cfg: CompileConfig) -> Path:
    """Build the bundle for cfg.target into cfg.out (default build/<target>). Returns the bundle dir."""
    from c2f_edge.backend import crosslink, targets, tuning_db, tvm_build
    from c2f_edge.export.stage import INPUT_NAME, OUTPUT_NAME, graph_signature, load_onnx

    t_start = time.perf_counter()
    # Everything that can fail fast does so before any slow step.
    spec = targets.get(cfg.target)
    spec.check()
    target_json = spec.to_json()
    tvm_build.check_codegen(target_json)
    linker = crosslink.linker_for(spec, cfg.cross_compiler)
    verifier = resolve_verifier(cfg.verify)
    source, onnx_path = _onnx_source(cfg)
    if cfg.tuning_log not in (None, "none"):
        tuning_db.read_log(cfg.tuning_log)  # a wrong directory fails now, not after the export
    onnx_model = load_onnx(onnx_path) if onnx_path else None
    out = Path(cfg.out or Path("build") / spec.name)

    stages = Stages(5 + (source == "export"))
    with atomic_dir(out) as tmp:
        if source == "export":
            from c2f_edge.export.stage import ExportConfig, export_onnx

            with stages.step("exporting ONNX"):
                onnx_path = export_onnx(ExportConfig(variant=cfg.variant, checkpoint=cfg.checkpoint,
                                                     weights=cfg.weights, seed=cfg.seed, out=str(tmp / "onnx")))
                onnx_model = load_onnx(onnx_path)
        onnx_meta = _onnx_manifest(onnx_path)
        # The graph signature is the model identity for tuning logs (weights do not change the kernels).
        signature = onnx_meta.get("graph_signature") or graph_signature(onnx_model)
        log, tuning_note = tuning_db.find_log(spec.name, target_json, signature, explicit=cfg.tuning_log,
                                                  machine=spec.machine())

        with stages.step("importing ONNX into TVM Relax"):
            shape = tvm_build.static_input_shape(onnx_model, INPUT_NAME)
            mod, params = tvm_build.import_onnx(onnx_model, shape)
        with stages.step(f"compiling for {spec.name} ({spec.kind}, {'tuned' if log else 'untuned'})"):
            database = tvm_build.open_database(log.path) if log else None
            ex = tvm_build.build(mod, params, target_json, database=database)
            device_modules = tvm_build.imported_kinds(ex.mod)
        with stages.step(f"linking {LIBRARY} with {linker.name}"):
            lib_path = tvm_build.export_library(ex, tmp / LIBRARY, linker)
        del ex, mod, params

        gpu = spec.device == "GPU"
        canon = spec.canonical()
        manifest = new_manifest(
            BUNDLE_KIND,
            versions={**tool_versions(("ziglang",)), "c2f-edge pipeline": tuning_db.PIPELINE_VERSION},
            target={"name": spec.name, "description": spec.description, "kind": spec.kind, "device": spec.device,
                    "triple": spec.triple, "json": target_json, "resolved": canon,
                    **({"host_json": target_json.get("host"), "host_resolved": canon.get("host")} if gpu else {}),
                    "source": spec.source},
            runtime={"device": "opencl" if spec.kind == "opencl" else spec.kind if gpu else "cpu",
                     "device_modules": device_modules, "loader": "tvm.runtime.vm.VirtualMachine",
                     "function": "main"},
            input=input_spec(shape, INPUT_NAME),
            output={"name": OUTPUT_NAME, "shape": _output_shape(onnx_model, shape[0]), "dtype": "float32",
                    "meaning": "ImageNet-1k logits (no softmax)"},
            onnx={"path": str(onnx_path) if source != "export" else "(exported into the bundle's temp dir)",
                  "sha256": sha256_file(onnx_path), "graph_signature": signature,
                  "variant": onnx_meta.get("variant"), "weights": onnx_meta.get("weights")},
            weights={"location": LIBRARY, "why": WEIGHTS_NOTE},
            tuning={"status": "tuned" if log else "untuned", "note": tuning_note,
                    "log": log.describe() if log else None},
            linker=linker.describe(),
            files={LIBRARY: {"sha256": sha256_file(lib_path), "bytes": lib_path.stat().st_size,
                             "elf": crosslink.elf_arch(lib_path)}},
            config=asdict(cfg),
        )
        write_json(tmp / MANIFEST, manifest)  # draft: loaders and verifiers read it

        with stages.step("verifying"):
            ctx = VerifyContext(bundle_dir=tmp, manifest=manifest, onnx_path=onnx_path, spec=spec)
            manifest["parity"] = _verify(cfg.verify, verifier, ctx)
        with stages.step("writing README and manifest"):
            if source == "export":
                import shutil

                shutil.rmtree(tmp / "onnx")
            (tmp / "README.txt").write_text(_readme(spec, manifest))
            manifest["bundle_bytes"] = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
            manifest["timings_s"] = {**stages.times, "total": round(time.perf_counter() - t_start, 3)}
            write_json(tmp / MANIFEST, manifest)
    return out
