"""Parity backends, one file per runtime, registered on import (`@register_backend`):

    torch.py        the fp32 reference
    onnxruntime.py  ONNX Runtime on model.onnx (simplified or raw)
    tvm.py          TVM bundles: tvm-local, tvm-rpc (a board or the emulated one), tvm-qemu (ARM kernels),
                    tvm-opencl (GPU kernels on the local OpenCL device)
    coreml.py       Core ML packages

base.py holds the protocol (`Backend`) and the registry.
"""

from c2f_edge.parity.backends import coreml, onnxruntime, torch, tvm  # noqa: F401 - registers the backends
from c2f_edge.parity.backends.base import (
    BACKENDS,
    Backend,
    backend_for_artifact,
    get_backend,
    list_backends,
    make_backend,
    register_backend,
)

__all__ = ["BACKENDS", "Backend", "backend_for_artifact", "get_backend", "list_backends", "make_backend",
           "register_backend"]
