"""TVM bundles: here, on a board over RPC, or kernel by kernel under qemu (ARM bundles, no board)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from c2f_edge.core.errors import (
    ArtifactError,
    C2FError,
    RemoteError,
    UnsupportedError,
    UsageError,
    first_line,
)
from c2f_edge.parity.backends.base import Backend, register_backend


class _TvmBase(Backend):
    artifact_kinds = ("tvm-bundle",)

    def _load_manifest(self):
        from c2f_edge.compile.bundle import read_bundle_manifest

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
        from c2f_edge.core.onnx_file import load_onnx
        from c2f_edge.export import scopes

        onnx_path = Path((self.manifest.get("onnx") or {}).get("path", ""))
        if not onnx_path.is_file():
            raise UnsupportedError(f"the bundle's source ONNX ({onnx_path}) is gone, so no debug build",
                                   hint="keep the exported ONNX next to the bundle to localize TVM mismatches")
        model = load_onnx(onnx_path, check=False)
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
        from c2f_edge.compile.bundle import load_bundle

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
        from c2f_edge.board.remote import open_session
        from c2f_edge.compile.bundle import load_remote_bundle

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
                raise RemoteError(f"cannot load {self.artifact}/model.so on {self.device}: {first_line(e)}",
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
    (board.kernel_runner). Results are the bundle's; there is no timing and no localization."""

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
