"""Reading TVM's serialized opencl module without a device, and the GPU limits checked from it."""

import pytest

from c2f_edge.backend import opencl_module
from c2f_edge.core.errors import ArtifactError
from tests.board.test_opencl import F32, HANDLE, I32, _module

SOURCE = """// Function: a_kernel
__kernel void a_kernel(__global float* restrict x, float v, int n);
__kernel void b_kernel(__global float* restrict x);
__kernel void a_kernel(__global float* restrict x, float v, int n) {
  __local float red_buf0[256];
  __local float4 tile[8];
  x[get_global_id(0)] = v;
}
// Function: b_kernel
__kernel void a_kernel(__global float* restrict x, float v, int n);
__kernel void b_kernel(__global float* restrict x);
__kernel void b_kernel(__global float* restrict x) {
  __local half h[100];
  x[0] = 1.0f;
}
"""


def test_the_kernel_table_and_each_kernels_local_memory_are_read():
    data = _module(SOURCE, [("a_kernel", [HANDLE, F32, I32], ["blockIdx.x", "threadIdx.x"]),
                            ("b_kernel", [HANDLE], ["threadIdx.x"])])
    kernels, source = opencl_module.read(data)
    assert source == SOURCE
    a, b = kernels["a_kernel"], kernels["b_kernel"]
    assert (a.args, a.launch_tags, a.local_bytes) == (5, ("blockIdx.x", "threadIdx.x"), 256 * 4 + 8 * 16)
    assert (b.args, b.local_bytes) == (2, 200)  # a prototype repeated before it is not its body


def test_the_tightest_kernel_is_named_against_each_limit():
    kernels, _ = opencl_module.read(_module(SOURCE, [("a_kernel", [HANDLE, F32, I32], ["threadIdx.x"]),
                                                     ("b_kernel", [HANDLE], ["threadIdx.x"])]))
    target = {"max_shared_memory_per_block": 1024, "max_function_args": 128, "max_threads_per_block": 256}
    checked = opencl_module.limits(kernels, target, {"a_kernel": 64, "b_kernel": 512})
    assert checked["local memory (bytes)"] == {"used": 1152, "limit": 1024, "kernel": "a_kernel", "share": 1.125}
    assert checked["work items per group"]["kernel"] == "b_kernel"
    assert opencl_module.over(checked) == ["a_kernel needs 1152 local memory (bytes), the target allows 1024",
                                           "b_kernel needs 512 work items per group, the target allows 256"]
    assert "work items per group" not in opencl_module.limits(kernels, target)  # not launched: not known


def test_a_damaged_module_is_an_artifact_error():
    data = _module(SOURCE, [("a_kernel", [HANDLE], [])])
    with pytest.raises(ArtifactError, match="cannot parse the OpenCL module"):
        opencl_module.read(data[:-10])
    with pytest.raises(ArtifactError, match="not OpenCL C source"):
        opencl_module.read(data.replace(b"\x02\x00\x00\x00\x00\x00\x00\x00cl", b"\x02\x00\x00\x00\x00\x00\x00\x00xx", 1))
