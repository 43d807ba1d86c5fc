"""The kernel calls of a built bundle, found without running any kernel.

A bundle's VM bytecode (backend.bundle_file.vm_executable_bytes) can run on any machine once every
kernel name resolves: each is given a placeholder, and the VM's instrument hook sees every kernel
call with its arguments before it would run. The per-kernel profiler records the calls; the qemu
kernel runner (board.kernel_runner) runs each one on an emulated CPU instead.

The placeholders are process-global functions, registered only while a placeholder VM is in use.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import numpy as np


@dataclass
class KernelCall:
    name: str
    args: list[dict]  # {"shape": [...], "dtype": "float32"} or {"scalar": value}

    def signature(self) -> str:
        parts = [f"{a['dtype']}{a['shape']}" if "shape" in a else repr(a["scalar"]) for a in self.args]
        return ", ".join(parts)


def kernel_names(exe) -> tuple[list[str], list[str]]:
    """(kernel names, VM function names) of a VM executable module, from its statistics and bytecode."""
    import tvm_ffi

    stats, text = exe["stats"](), exe["as_text"]()
    m = re.search(r"Globals \(#\d+\): \[(.*)\]", stats)
    names = m.group(1).split(", ") if m else []
    vm_funcs = re.findall(r"^@(\S+?):", text, re.MULTILINE)
    kernels = [n for n in names if n not in vm_funcs and not n.startswith("vm.builtin.")
               and tvm_ffi.get_global_func(n, allow_missing=True) is None]
    return kernels, vm_funcs


@contextlib.contextmanager
def placeholder_vm(exe_bytes: bytes, device=None):
    """Yields (VirtualMachine of a serialized VM executable, set of its kernel names), every kernel a
    placeholder that raises if it runs: the caller's instrument hook must skip them. The placeholders
    are global functions, removed again on exit."""
    import tvm
    import tvm_ffi
    from tvm.runtime.vm import VirtualMachine

    exe = tvm_ffi.get_global_func("ffi.Module.load_from_bytes.relax.VMExecutable")(exe_bytes)
    kernels, _ = kernel_names(exe)
    for name in kernels:
        tvm_ffi.register_global_func(name, _never_called, override=True)
    try:
        yield VirtualMachine(exe, device or tvm.cpu()), set(kernels)
    finally:
        for name in kernels:
            tvm_ffi.remove_global_func(name)


def run_kernel_by_kernel(exe_bytes: bytes, x: np.ndarray, call, func: str = "main", capture: bool = True):
    """Run `func` of a serialized VM executable here, handing every kernel call to `call(name, args)`,
    which runs it elsewhere (a board, an emulated CPU) and fills the call's tensor arguments with the
    results. Returns (output, [(kernel, its output) in call order], empty unless `capture`): each
    kernel's last tensor argument is its output (destination passing), copied right away because the
    VM reuses the memory."""
    import tvm
    import tvm_ffi
    from tvm.runtime.vm import VMInstrumentReturnKind

    outputs: list[tuple[str, np.ndarray]] = []
    with placeholder_vm(exe_bytes) as (vm, kernels):
        def instrument(_func, symbol, before_run, _ret, *args):
            if symbol not in kernels or not before_run:
                return int(VMInstrumentReturnKind.NO_OP)
            call(str(symbol), list(args))
            tensors = [a for a in args if hasattr(a, "numpy")]
            if capture and tensors:
                outputs.append((str(symbol), tensors[-1].numpy()))
            return int(VMInstrumentReturnKind.SKIP_RUN)

        vm.set_instrument(tvm_ffi.convert(instrument))
        out = vm[func](tvm.runtime.tensor(np.ascontiguousarray(x)))
        return out.numpy(), outputs


def capture_kernel_outputs(vm, x: np.ndarray, device, func: str = "main"):
    """Run a loaded bundle's VM (its own kernels, here) and copy every kernel's output as it is written.
    Returns (output, [(kernel, its output) in call order])."""
    import tvm
    import tvm_ffi
    from tvm.runtime.vm import VMInstrumentReturnKind

    outputs: list[tuple[str, np.ndarray]] = []

    def instrument(_func, symbol, before_run, _ret, *args):
        if not before_run and not str(symbol).startswith("vm.builtin."):
            tensors = [a for a in args if hasattr(a, "numpy")]
            if tensors:
                outputs.append((str(symbol), tensors[-1].numpy()))
        return int(VMInstrumentReturnKind.NO_OP)

    vm.set_instrument(tvm_ffi.convert(instrument))
    out = vm[func](tvm.runtime.tensor(np.ascontiguousarray(x, np.float32), device))
    return out.numpy(), outputs


def trace_kernel_calls(exe_bytes: bytes, input_shape, input_dtype: str = "float32",
                       func: str = "main") -> list[KernelCall]:
    """Run `func` of a serialized VM executable here with all kernels skipped; return the kernel calls."""
    import tvm
    import tvm_ffi
    from tvm.runtime.vm import VMInstrumentReturnKind

    calls: list[KernelCall] = []
    with placeholder_vm(exe_bytes) as (vm, kernel_set):
        def instrument(_func, symbol, before_run, _ret, *args):
            if symbol not in kernel_set:
                return int(VMInstrumentReturnKind.NO_OP)
            if before_run:
                calls.append(KernelCall(str(symbol), [_describe(a) for a in args]))
            return int(VMInstrumentReturnKind.SKIP_RUN)

        vm.set_instrument(tvm_ffi.convert(instrument))
        vm[func](tvm.runtime.tensor(np.zeros(tuple(input_shape), dtype=input_dtype)))
    return calls


def _never_called(*_args):
    raise RuntimeError("placeholder kernel ran during tracing")


def _describe(a) -> dict:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return {"shape": [int(d) for d in a.shape], "dtype": str(a.dtype)}
    if isinstance(a, bool | int | float | str):
        return {"scalar": a}
    try:  # shape tuples and other small objects
        return {"scalar": [int(v) for v in a]}
    except TypeError:
        return {"scalar": str(a)}
