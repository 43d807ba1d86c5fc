"""Our OpenCL runtime for the TVM wheel: GPU kernels built by TVM run on the local OpenCL device (PoCL on
these machines), and its failures are one-line errors."""

from __future__ import annotations

import ctypes
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from c2f_edge.backend import targets


def _twin(name: str) -> dict:
    from c2f_edge.board.opencl import twin_target

    return twin_target(targets.get(name).to_json())


def _run_twin(mod, params, target: dict, out: Path, dev, *inputs):
    import tvm
    from tvm import relax

    from c2f_edge.backend.tvm_build import build

    build(mod, params, target).export_library(str(out))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out)), dev)
    return vm["main"](*[tvm.runtime.tensor(x, dev) for x in inputs]).numpy()


def test_a_twin_keeps_the_device_and_takes_this_machine_as_host():
    mali = targets.get("mali").to_json()
    twin = _twin("mali")
    assert twin == {**{k: v for k, v in mali.items() if k != "host"}, "host": {"kind": "llvm"}}
    assert mali["host"]["mtriple"].startswith("aarch64")  # the bundle's own host is the board's CPU


def test_elementwise_kernels_run_on_the_local_device(cl_device, tmp_path):
    import tvm
    from tvm.script import relax as R

    @tvm.script.ir_module
    class Mod:
        @R.function
        def main(x: R.Tensor((4, 1000), "float32"), y: R.Tensor((4, 1000), "float32")):
            with R.dataflow():
                z = R.nn.relu(R.multiply(R.add(x, y), x))
                R.output(z)
            return z

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 4, 1000)).astype(np.float32)
    out = _run_twin(Mod, {}, _twin("mali"), tmp_path / "add.so", cl_device, x, y)
    np.testing.assert_allclose(out, np.maximum((x + y) * x, 0), rtol=1e-6, atol=0)


def test_a_small_conv_net_for_adreno_matches_onnx_runtime(cl_device, tmp_path):
    from c2f_edge.backend.tvm_build import import_onnx
    from c2f_edge.core.onnx_file import INPUT_NAME, ort_session
    from tests.compile.test_stage import _tiny_onnx

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out = _run_twin(*import_onnx(model), _twin("adreno"), tmp_path / "tiny.so", cl_device, x)
    ref = ort_session(model).run(None, {INPUT_NAME: x})[0]
    assert np.abs(out - ref).max() < 1e-4


# --- a module written by hand in TVM's serialized form: the loader's own checks ---------------------------

def _str(s: str) -> bytes:
    return struct.pack("<Q", len(s.encode())) + s.encode()


def _module(source: str, kernels: list[tuple[str, list[tuple[int, int, int]], list[str]]]) -> bytes:
    """Format "cl", one FunctionInfo per kernel (name, argument dtypes, launch tags), then the source."""
    out = _str("cl") + struct.pack("<Q", len(kernels))
    for name, args, tags in kernels:
        out += _str(name) + _str(name) + struct.pack("<Q", len(args))
        out += b"".join(struct.pack("<BBH", *a) for a in args)
        out += struct.pack("<Q", len(tags)) + b"".join(_str(t) for t in tags) + struct.pack("<Q", 0)
    return out + _str(source)


HANDLE, F32, I32 = (3, 64, 1), (2, 32, 1), (0, 32, 1)
FILL = "__kernel void fill(__global float* restrict a, float v, int n) { int i = get_global_id(0); if (i < n) a[i] = v * i; }"


def _load(data: bytes):
    import tvm

    return tvm.get_global_func("ffi.Module.load_from_bytes.opencl")(data)


def test_a_kernel_gets_its_buffers_scalars_and_launch_sizes(cl_device):
    import tvm

    mod = _load(_module(FILL, [("fill", [HANDLE, F32, I32], ["blockIdx.x", "threadIdx.x"])]))
    t = tvm.runtime.empty((100,), "float32", cl_device)
    mod["fill"](ctypes.c_void_p(t.data_ptr()), 2.0, 100, 4, 32)  # 4 groups of 32: 128 items for 100 values
    np.testing.assert_array_equal(t.numpy(), 2.0 * np.arange(100, dtype=np.float32))
    assert mod.inspect_source() == FILL


def test_a_launch_beyond_the_devices_work_group_limit_is_named(cl_device):
    import tvm

    limit = cl_device.max_threads_per_block
    mod = _load(_module(FILL, [("fill", [HANDLE, F32, I32], ["blockIdx.x", "threadIdx.x"])]))
    t = tvm.runtime.empty((100,), "float32", cl_device)
    with pytest.raises(Exception, match=rf"kernel fill: a work-group of {2 * limit} items .* allows for it \({limit}"):
        mod["fill"](ctypes.c_void_p(t.data_ptr()), 1.0, 100, 1, 2 * limit)


def test_a_kernel_that_does_not_build_reports_the_drivers_log(cl_device):
    import tvm

    mod = _load(_module("__kernel void k(__global float* a) { a[0] = no_such_name; }", [("k", [HANDLE], [])]))
    t = tvm.runtime.empty((1,), "float32", cl_device)
    with pytest.raises(Exception, match=r"OpenCL kernels failed to build on .*no_such_name"):
        mod["k"](ctypes.c_void_p(t.data_ptr()))


HALF = """#ifdef cl_khr_fp16
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#else
#error "no half"
#endif
__kernel void halve(__global half* restrict a, int n) { int i = get_global_id(0); if (i < n) a[i] = a[i] * (half)0.5f; }
"""


def test_half_kernels_run_where_the_device_has_cl_khr_fp16_and_are_refused_in_one_line_where_not(cl_device):
    """TVM guards half kernels with `#error` when the extension is missing; the runtime names it first."""
    import tvm

    from c2f_edge.board import opencl

    mod = _load(_module(HALF, [("halve", [HANDLE, I32], ["blockIdx.x", "threadIdx.x"])]))
    x = np.arange(64, dtype=np.float16)
    t = tvm.runtime.tensor(x, cl_device)
    if "cl_khr_fp16" not in opencl.extensions():
        with pytest.raises(Exception, match=r"compute in half precision, and .* does not offer cl_khr_fp16: run "
                                            r"this fp16 bundle on a GPU that has it, or build --precision fp32"):
            mod["halve"](ctypes.c_void_p(t.data_ptr()), 64, 2, 32)
        return
    mod["halve"](ctypes.c_void_p(t.data_ptr()), 64, 2, 32)
    np.testing.assert_array_equal(t.numpy(), x * np.float16(0.5))


def test_bytes_that_are_not_a_module_are_refused(cl_device):
    with pytest.raises(Exception, match="truncated or not one"):
        _load(_module(FILL, [])[:-5])
    with pytest.raises(Exception, match="only OpenCL C source"):
        _load(_module(FILL, []).replace(_str("cl"), _str("xx"), 1))


def test_no_opencl_platform_is_a_one_line_error(cl_device, tmp_path):
    # ocl-icd finds drivers through OCL_ICD_VENDORS: an empty directory is a machine without one.
    env = {**os.environ, "OCL_ICD_VENDORS": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "c2f_edge.board.opencl", "setup"], capture_output=True,
                          text=True, env=env, check=False)
    assert proc.returncode == 2
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert error == [("error: no OpenCL device to run on: no OpenCL platform (is an ICD such as PoCL installed "
                      "under /etc/OpenCL/vendors?)")], proc.stderr
