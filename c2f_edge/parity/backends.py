"""Parity backends: a registry of "run this artifact on this batch" implementations.

A backend is built from an artifact path and plain options (strings and numbers), and then only ever
sees input batches: it cannot see the reference outputs or the torch model, so it cannot echo them.
`make_backend` enforces that (options must be JSON scalars), and the harness passes read-only inputs.

    @register_backend
    class MyBackend(Backend):
        name = "my-runtime"
        def __init__(self, artifact, options): ...       # prepare: load the artifact
        def run(self, x): ...                             # [1,3,H,W] float32 -> [1,1000] logits
        def probe(self, x, boundaries): ...               # optional: {module path: activation}
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from c2f_edge.core.artifacts import read_manifest
from c2f_edge.core.errors import ArtifactError, C2FError, RemoteError, UnsupportedError, UsageError

INPUT_NAME = "input"


class Backend:
    """One way to compute logits from an artifact. Subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    artifact_kinds: ClassVar[tuple[str, ...]] = ()  # manifest kinds accepted, for auto-detection

    def __init__(self, artifact: Path, options: dict):
        self.artifact = Path(artifact)
        self.options = options
        self.precision = "fp32"
        self.device = "this machine"

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probe(self, x: np.ndarray, boundaries: list[str]) -> dict[str, np.ndarray]:
        """Activations at module boundaries (see parity.localize) for one input; a subset is fine."""
        raise UnsupportedError(f"backend {self.name} cannot expose intermediate values")

    @property
    def label(self) -> str:
        return self.name

    def info(self) -> dict:
        return {"backend": self.name, "label": self.label, "artifact": str(self.artifact),
                "precision": self.precision, "device": self.device}

    def close(self) -> None:
        pass


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    if not cls.name:
        raise ValueError("a backend needs a name")
    BACKENDS[cls.name] = cls
    return cls


def list_backends() -> list[str]:
    return list(BACKENDS)


def get_backend(name: str) -> type[Backend]:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        raise UsageError(f"unknown parity backend '{name}'",
                         hint=(f"did you mean '{close[0]}'? " if close else "") +
                              f"backends: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def make_backend(name: str, artifact: str | os.PathLike, options: dict | None = None) -> Backend:
    """Prepare a backend. Options are plain values only: no arrays, models or callables can get in."""
    options = dict(options or {})
    for k, v in options.items():
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise UsageError(f"backend option {k!r} must be a string or number, not {type(v).__name__}",
                             hint="backends receive only an artifact path, plain options and input batches")
    return get_backend(name)(Path(artifact), options)


def backend_for_artifact(path: str | os.PathLike) -> str:
    """Which backend runs an artifact directory, from its manifest kind."""
    p = Path(path)
    if p.is_file() and p.suffix == ".onnx":
        p = p.parent
    if p.suffix == ".mlpackage":
        p = p.parent
    if not p.exists():
        raise ArtifactError(f"artifact not found: {path}", hint="check the path, or build it first")
    kind = read_manifest(p).get("kind")
    for name, cls in BACKENDS.items():
        if kind in cls.artifact_kinds:
            return name
    raise ArtifactError(f"{path}: no parity backend for artifact kind {kind!r}",
                        hint=f"pass an ONNX, TVM bundle or Core ML directory, or name one of {', '.join(BACKENDS)}")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines and lines[0].startswith("Traceback") else lines[0] if lines else type(e).__name__)[:200]


def _manifest_or_empty(d: Path) -> dict:
    try:
        return read_manifest(d)
    except ArtifactError:
        return {}


# --- torch: the fp32 reference ------------------------------------------------------------------------

@register_backend
class TorchBackend(Backend):
    """PyTorch fp32 on CPU: the reference. Artifact: a checkpoint (.pth), or any artifact directory whose
    manifest records its weights (synthetic seed or checkpoint path); options variant/weights/seed override."""

    name = "torch"
    description = "PyTorch fp32 (the reference)"

    def __init__(self, artifact: Path, options: dict):
        super().__init__(artifact, options)
        from c2f_edge.models.weights import load_model

        variant, checkpoint, weights, seed = reference_spec(artifact, options)
        self.model, self.source = load_model(variant, checkpoint=checkpoint, weights=weights, seed=seed)
        self.variant = variant

    def run(self, x):
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.array(x, np.float32))).numpy()

    def probe(self, x, boundaries):
        from c2f_edge.parity.localize import reference_activations

        return reference_activations(self.model, np.array(x, np.float32), boundaries)

    def info(self):
        return {**super().info(), "variant": self.variant, "weights": self.source.to_dict()}


def reference_spec(artifact: Path, options: dict) -> tuple[str, str | None, str | None, int]:
    """(variant, checkpoint, weights, seed) of the model an artifact was made from."""
    if options.get("weights") or options.get("checkpoint"):
        return (options.get("variant") or "n", options.get("checkpoint"), options.get("weights"),
                int(options.get("seed") or 0))
    if artifact.is_file() and artifact.suffix in (".pth", ".pt", ".bin"):
        return options.get("variant") or "n", str(artifact), None, 0
    d = artifact.parent if artifact.is_file() or artifact.suffix == ".mlpackage" else artifact
    m = read_manifest(d)
    # export: top level; coreml: under "model"; TVM bundle: under "onnx" (its top-level "weights" is a note)
    sections = [m, m.get("model") or {}, m.get("onnx") or {}]
    src = next((s["weights"] for s in sections if isinstance(s.get("weights"), dict) and "kind" in s["weights"]),
               None)
    variant = next((s["variant"] for s in sections if s.get("variant")), None)
    if src is None:
        raise ArtifactError(f"{d}/manifest.json does not say which weights it was built from",
                            hint="pass the reference model: --weights synthetic or --checkpoint PATH")
    variant = options.get("variant") or variant or "n"
    if src["kind"] == "synthetic":
        return variant, None, "synthetic", int(src.get("seed", 0))
    return variant, src.get("path"), None, 0


# --- ONNX Runtime -------------------------------------------------------------------------------------

def _onnx_file(artifact: Path) -> Path:
    p = artifact / "model.onnx" if artifact.is_dir() else artifact
    if not p.is_file():
        raise ArtifactError(f"ONNX file not found: {p}", hint="run `c2f-edge export` first, or fix the path")
    return p


@register_backend
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime (CPU) on an exported ONNX: the simplified `c2f-edge export` output, or the raw
    pre-simplification export (`parity.raw_onnx`)."""

    name = "onnxruntime"
    description = "ONNX Runtime CPU on model.onnx"
    artifact_kinds = ("onnx", "onnx-raw")

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        import onnx
        import onnxruntime as ort

        self.path = _onnx_file(self.artifact)
        self.kind = _manifest_or_empty(self.path.parent).get("kind", "onnx")
        try:
            self.model = onnx.load(str(self.path))
        except Exception as e:
            raise ArtifactError(f"{self.path} is not a valid ONNX model: {_first_line(e)}",
                                hint="re-create it with `c2f-edge export`") from e
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self._ort, self._so = ort, so
        try:
            self.session = ort.InferenceSession(self.model.SerializeToString(), so,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {_first_line(e)}",
                                hint="re-create it with `c2f-edge export`") from e
        self.input_name = self.session.get_inputs()[0].name

    @property
    def label(self):
        return "onnxruntime[raw]" if self.kind == "onnx-raw" else "onnxruntime"

    def run(self, x):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    def probe(self, x, boundaries):
        from c2f_edge.export import scopes

        tensors = scopes.boundary_tensors_for(self.model, self.path, boundaries)
        probed = scopes.with_outputs(self.model, list(tensors.values()))
        sess = self._ort.InferenceSession(probed.SerializeToString(), self._so, providers=["CPUExecutionProvider"])
        outs = sess.run(list(tensors.values()), {self.input_name: np.ascontiguousarray(x, np.float32)})
        return dict(zip(tensors, outs))


# --- TVM ----------------------------------------------------------------------------------------------

class _TvmBase(Backend):
    artifact_kinds = ("tvm-bundle",)

    def _load_manifest(self):
        from c2f_edge.compile.stage import read_bundle_manifest

        if not self.artifact.exists():
            raise ArtifactError(f"TVM bundle not found: {self.artifact}", hint="run `c2f-edge compile` first")
        self.manifest = read_bundle_manifest(self.artifact)
        self.target_name = self.manifest["target"]["name"]
        self.tuned = (self.manifest.get("tuning") or {}).get("status") == "tuned"

    @property
    def label(self):
        return f"{self.name}[{self.target_name}]"

    def _debug_executable(self, boundaries):
        """The bundle's source ONNX with the boundaries as extra outputs, compiled like the bundle (same
        target, same tuning log). Returns (executable, {boundary: output index})."""
        from c2f_edge.backend import tvm_build
        from c2f_edge.export import scopes

        onnx_path = Path((self.manifest.get("onnx") or {}).get("path", ""))
        if not onnx_path.is_file():
            raise UnsupportedError(f"the bundle's source ONNX ({onnx_path}) is gone, so no debug build",
                                   hint="keep the exported ONNX next to the bundle to localize TVM mismatches")
        model = scopes.load(onnx_path)
        tensors = scopes.boundary_tensors_for(model, onnx_path, boundaries)
        probed = scopes.with_outputs(model, list(tensors.values()), infer_shapes=True)
        shape = self.manifest["input"]["shape"]
        mod, params = tvm_build.import_onnx(probed, shape)
        log = ((self.manifest.get("tuning") or {}).get("log") or {}).get("path")
        db = tvm_build.open_database(log) if log and Path(log).is_dir() else None
        outputs = [o.name for o in probed.graph.output]
        index = {b: outputs.index(t) for b, t in tensors.items()}  # `pred` may be the original output
        return tvm_build.build(mod, params, self.manifest["target"]["json"], database=db), index

    @staticmethod
    def _outputs(res) -> list[np.ndarray]:
        if hasattr(res, "numpy"):
            return [res.numpy()]
        return [r.numpy() for r in res]


@register_backend
class TvmLocalBackend(_TvmBase):
    """A TVM bundle that runs on this machine (e.g. build/host)."""

    name = "tvm-local"
    description = "TVM bundle on this machine"

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        from c2f_edge.compile.stage import load_bundle

        self._load_manifest()
        self.runner = load_bundle(self.artifact)

    def run(self, x):
        return self.runner(x)

    def probe(self, x, boundaries):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        ex, index = self._debug_executable(boundaries)
        with tempfile.TemporaryDirectory(prefix="c2f-parity-") as d:
            lib_path = Path(d) / "debug.so"
            ex.export_library(str(lib_path))
            vm = VirtualMachine(tvm.runtime.load_module(str(lib_path)), tvm.cpu())
            outs = self._outputs(vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, np.float32), tvm.cpu())))
        return {b: outs[i] for b, i in index.items()}


@register_backend
class TvmRpcBackend(_TvmBase):
    """A TVM bundle on a board over RPC. Option `rpc`: `rpc://HOST:PORT` (a server),
    `rpc://tracker@HOST:PORT/KEY` (through a tracker), or `emulated` (start the emulated aarch64 board
    on 127.0.0.1 for this run)."""

    name = "tvm-rpc"
    description = "TVM bundle on a board (TVM RPC)"

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        from c2f_edge.compile.stage import load_remote_bundle
        from c2f_edge.board.remote import open_session

        self._load_manifest()
        url = options.get("rpc")
        if not url:
            raise UsageError("backend tvm-rpc needs an RPC address",
                             hint="--rpc rpc://HOST:PORT, rpc://tracker@HOST:PORT/KEY or --rpc emulated")
        self.session_handle = open_session(url, timeout=float(options.get("timeout") or 10))
        self.device = self.session_handle.describe()
        try:
            self.runner = load_remote_bundle(self.artifact, self.session_handle.session)
        except BaseException as e:
            self.session_handle.close()  # never leave an emulated board running
            if isinstance(e, Exception) and not isinstance(e, C2FError):
                raise RemoteError(f"cannot load {self.artifact}/model.so on {self.device}: {_first_line(e)}",
                                  hint=f"is the board a {self.target_name} device with the same TVM "
                                       "version? check its log") from e
            raise

    def run(self, x):
        return self.runner(x)

    def probe(self, x, boundaries):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        from c2f_edge.backend import crosslink, targets

        ex, index = self._debug_executable(boundaries)
        spec = targets.get(self.target_name)
        sess = self.session_handle.session
        with tempfile.TemporaryDirectory(prefix="c2f-parity-") as d:
            lib_path = Path(d) / "debug.so"
            ex.export_library(str(lib_path), fcompile=crosslink.linker_for(spec, None))
            sess.upload(str(lib_path), target="c2f_parity_debug.so")
        dev = sess.device(self.manifest["runtime"]["device"], 0)
        vm = VirtualMachine(sess.load_module("c2f_parity_debug.so"), dev)
        outs = self._outputs(vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x, np.float32), dev)))
        return {b: outs[i] for b, i in index.items()}

    def close(self):
        self.runner = None
        self.session_handle.close()


@register_backend
class TvmQemuBackend(_TvmBase):
    """An ARM bundle (armv7, arm64) checked here with no board and no TVM runtime for its CPU: the VM
    runs on this machine, each kernel of the bundle's model.so under qemu user mode
    (c2f_edge.kernel_runner). Results are the bundle's; there is no timing and no localization."""

    name = "tvm-qemu"
    description = "ARM TVM bundle: VM here, its kernels under qemu user mode"

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        from c2f_edge.board.kernel_runner import emulation_for

        self._load_manifest()
        qemu, deb_arch, _ = emulation_for(self.artifact / "model.so")
        self.device = f"{qemu} ({deb_arch} kernels, VM on this machine)"

    def run(self, x):
        from c2f_edge.board.kernel_runner import run_bundle

        return run_bundle(self.artifact, np.ascontiguousarray(x, np.float32))


# --- Core ML ------------------------------------------------------------------------------------------

@register_backend
class CoreMLBackend(Backend):
    """A `c2f-edge coreml` package: the NumPy MIL interpreter on Linux, MLModel.predict on macOS.
    fp16 packages run in fp16 emulation; compressed ones are judged in their compression's class."""

    name = "coreml"
    description = "Core ML package (NumPy MIL interpreter here, MLModel.predict on macOS)"
    artifact_kinds = ("coreml",)

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        from c2f_edge.coreml import check

        self.check = check
        self.package = check.resolve_package(self.artifact)
        self.manifest = _manifest_or_empty(self.package.parent)
        compress = (self.manifest.get("compress") or {}).get("mode", "none")
        self.mode = options.get("mode") or ("fp16" if self.manifest.get("precision") == "fp16" else "fp32")
        self.precision = (compress if compress in ("int8", "int4") else
                          "palettized" if compress.startswith("palett") else self.mode)
        self.image_input = self.manifest.get("input_kind") == "image"
        self.backend = check.select_backend(options.get("runtime") or "auto")
        self.device = "MLModel.predict" if self.backend == "coreml" else "NumPy MIL interpreter"

    @property
    def label(self):
        comp = (self.manifest.get("compress") or {}).get("mode", "none")
        return f"coreml[{self.manifest.get('precision', self.mode)}{'' if comp == 'none' else '+' + comp}]"

    def _feed(self, x):
        x = np.array(x, np.float32)
        if self.image_input:  # the package takes RGB pixels 0..255 and normalizes inside
            from c2f_edge.core.artifacts import IMAGENET_MEAN, IMAGENET_STD

            mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
            std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
            x = (x * std + mean) * 255.0
        return x

    def run(self, x):
        return np.asarray(self.check.run_package(self.package, self._feed(x), mode=self.mode,
                                                 backend=self.backend), np.float32).reshape(len(x), -1)

    def probe(self, x, boundaries):
        # The converter's map gives whole modules; its attn/mlp vars are unscaled, so those are skipped.
        var_map = {b: v for b, v in self.check.module_map(self.package.parent).items()
                   if b in boundaries and not b.endswith((".attn", ".mlp"))}
        if not var_map:
            raise UnsupportedError("this Core ML package records no module -> MIL variable map",
                                   hint="re-create it with `c2f-edge coreml`")
        _, inter = self.check.run_package(self.package, self._feed(x), mode=self.mode, backend="numpy",
                                          return_intermediates=list(var_map.values()))
        return {b: np.asarray(inter[v], np.float32) for b, v in var_map.items() if v in inter}
