"""TVM bundles: here, on a board over RPC, or kernel by kernel under qemu (ARM bundles, no board)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from c2f_edge.backend import opencl_module
from c2f_edge.compile.bundle import LIBRARY
from c2f_edge.core.errors import (
    ArtifactError,
    C2FError,
    RemoteError,
    UnsupportedError,
    UsageError,
    first_line,
)
from c2f_edge.parity.backends.base import Backend, register_backend
from c2f_edge.parity.localize import KernelOutputs


class _TvmBase(Backend):
    artifact_kinds = ("tvm-bundle",)

    def _load_manifest(self):
        from c2f_edge.compile.bundle import read_bundle_manifest

        if not self.artifact.exists():
            raise ArtifactError(f"TVM bundle not found: {self.artifact}", hint="run `c2f-edge compile` first")
        from c2f_edge.compile.verify import bundle_precision

        self.manifest = read_bundle_manifest(self.artifact)
        self.precision = bundle_precision(self.manifest)
        self.target_name = self.manifest["target"]["name"]
        self.tuned = (self.manifest.get("tuning") or {}).get("status") == "tuned"

    @property
    def label(self):
        return f"{self.name}[{self.target_name}]"


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
        """The bundle's own kernels, here, with every kernel's output copied as it is written."""
        import tvm
        from tvm.runtime.vm import VirtualMachine

        from c2f_edge.backend.kernel_trace import capture_kernel_outputs

        vm = VirtualMachine(tvm.runtime.load_module(str(self.artifact / LIBRARY)), tvm.cpu())
        _, outputs = capture_kernel_outputs(vm, x, tvm.cpu())
        return KernelOutputs(outputs, "this machine")


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
        """The bundle's own kernels on the board, one call at a time: its VM bytecode runs here and each
        kernel call goes over RPC to the board's copy of the bundle's kernel library, with its tensors."""
        import tvm

        from c2f_edge.backend import bundle_file
        from c2f_edge.backend.kernel_trace import run_kernel_by_kernel

        so = self.artifact / LIBRARY
        sess = self.session_handle.session
        dev = sess.device(self.manifest["runtime"]["device"], 0)
        with tempfile.TemporaryDirectory(prefix="c2f-parity-") as d:
            klib = bundle_file.kernel_library(so, Path(d) / "kernels.so")
            sess.upload(str(klib), target="c2f_parity_kernels.so")
        kernels = sess.load_module("c2f_parity_kernels.so")

        def call(name, args):
            remote = [tvm.runtime.tensor(a.numpy(), dev) if hasattr(a, "numpy") else a for a in args]
            kernels[name](*remote)
            for a, r in zip(args, remote):
                if hasattr(a, "numpy"):  # outputs, and inputs unchanged: a kernel may write several
                    a.copyfrom(r.numpy())

        _, outputs = run_kernel_by_kernel(bundle_file.vm_executable_bytes(so), np.asarray(x, np.float32), call)
        return KernelOutputs(outputs, f"{self.device}, one kernel call at a time over RPC")

    def close(self):
        self.runner = None
        self.session_handle.close()


@register_backend
class TvmQemuBackend(_TvmBase):
    """An ARM bundle (armv7, arm64) checked here with no board and no TVM runtime for its CPU: the VM
    runs on this machine, each kernel of the bundle's model.so under qemu user mode
    (board.kernel_runner). Results are the bundle's; there is no timing."""

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

    def probe(self, x, boundaries):
        """The bundle's own kernels under qemu, with every kernel's output."""
        from c2f_edge.board.kernel_runner import run_bundle

        _, outputs = run_bundle(self.artifact, np.ascontiguousarray(x, np.float32), capture=True)
        return KernelOutputs(outputs, self.device)


@register_backend
class TvmOpenCLBackend(_TvmBase):
    """A GPU bundle (mali, adreno) whose OpenCL kernels run on this machine's OpenCL device (PoCL here, a
    GPU where there is one) through our OpenCL runtime. The host code is its twin's, built for this
    machine from the same ONNX file; the twin is used only when its OpenCL module is byte-identical to
    the bundle's (compile.twin). Results only: PoCL's timings say nothing about a phone's GPU."""

    name = "tvm-opencl"
    description = "GPU (OpenCL) TVM bundle: its kernels on the local OpenCL device"

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        import tvm
        from tvm.runtime.vm import VirtualMachine

        from c2f_edge.board import opencl
        from c2f_edge.compile.bundle import BundleRunner
        from c2f_edge.compile.twin import opencl_twin

        self._load_manifest()
        opencl.load()
        if self.precision != "fp32" and (problem := opencl.fp16_problem()):  # before the twin's build
            raise UnsupportedError(f"{self.label}: this {self.precision} bundle's kernels compute in half "
                                   f"precision, which the local OpenCL device cannot run: {problem}",
                                   hint="run its parity on the board (--rpc), or on a machine whose OpenCL device "
                                        "offers cl_khr_fp16")
        self.twin = opencl_twin(self.artifact)
        self.dev = tvm.opencl(0)
        lib = tvm.runtime.load_module(str(self.twin / LIBRARY))
        self.runner = BundleRunner(VirtualMachine(lib, self.dev), self.dev, self.manifest)
        self.kernels, _ = opencl_module.read(opencl_module.module_bytes(self.artifact / LIBRARY))
        self.device = f"{opencl.device_name()} (OpenCL; the bundle's kernels, its twin's host code)"

    def run(self, x):
        out = self.runner(x)
        if over := opencl_module.over(self.gpu_limits()):  # would fail on the phone, if not here
            raise UnsupportedError(f"{self.label}: {over[0]}", hint="a GPU schedule exceeds the target's limits")
        return out

    def gpu_limits(self) -> dict:
        """The target's limits against the kernels' local memory and arguments, and the work-groups they
        were launched with here."""
        from c2f_edge.board import opencl

        launched = {k: v for k, v in opencl.launches().items() if k in self.kernels}
        return opencl_module.limits(self.kernels, self.manifest["target"]["resolved"], launched)

    def info(self):
        return {**super().info(), "gpu_limits": self.gpu_limits()}

    def probe(self, x, boundaries):
        """The bundle's kernels on the OpenCL device, with every kernel's output copied back."""
        import tvm
        from tvm.runtime.vm import VirtualMachine

        from c2f_edge.backend.kernel_trace import capture_kernel_outputs

        vm = VirtualMachine(tvm.runtime.load_module(str(self.twin / LIBRARY)), self.dev)
        _, outputs = capture_kernel_outputs(vm, x, self.dev)
        return KernelOutputs(outputs, self.device)
