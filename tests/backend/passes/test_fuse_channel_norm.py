"""The channels-first LayerNorm rewrite: the ONNX-imported chain becomes one kernel on CPU targets,
computes what the chain computes, and leaves look-alikes and GPU builds alone."""

from __future__ import annotations

import numpy as np
import pytest

from c2f_edge.backend import pipeline, tvm_build
from tests.fixtures.schedules import ARM64, HOST

EPS = 1e-6


def _chain(c=32, hw=10, exponent=2.0, axis=1, seed=0):
    """x -> mean/subtract/power/mean/add/sqrt/divide/multiply/add, as the ONNX frontend imports it."""
    from tvm import relax

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c, 1, 1)).astype("float32")
    b = rng.standard_normal((c, 1, 1)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            mean = bb.emit(relax.op.mean(x, axis=[axis], keepdims=True))
            dev = bb.emit(relax.op.subtract(x, mean))
            sq = bb.emit(relax.op.power(dev, relax.const(exponent, "float32")))
            var = bb.emit(relax.op.mean(sq, axis=[axis], keepdims=True))
            std = bb.emit(relax.op.sqrt(relax.op.add(var, relax.const(EPS, "float32"))))
            out = bb.emit_output(relax.op.add(relax.op.multiply(relax.const(w), relax.op.divide(dev, std)),
                                              relax.const(b)))
        bb.emit_func_output(out)
    return bb.get(), w, b


def _reference(x, w, b, exponent=2.0, axis=1):
    u = x.mean(axis, keepdims=True)
    s = ((x - u) ** exponent).mean(axis, keepdims=True)
    return w * ((x - u) / np.sqrt(s + EPS)) + b


def _kernels(mod, target):
    import tvm

    fused = pipeline.legalize_and_fuse(mod, target)
    return sorted(gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def _run(mod, x):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm_build.build(mod, None, HOST), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_the_chain_becomes_one_kernel_that_computes_the_same():
    mod, w, b = _chain()
    assert _kernels(mod, HOST) == ["channel_norm"]
    x = (np.random.default_rng(1).standard_normal((1, 32, 10, 10)) * 3 + 1).astype("float32")
    np.testing.assert_allclose(_run(mod, x), _reference(x, w, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"exponent": 3.0}, {"axis": 2}], ids=["cube", "over rows"])
def test_look_alikes_are_left_to_the_stock_lowering(kwargs):
    mod, w, b = _chain(**kwargs)
    assert "channel_norm" not in _kernels(mod, HOST)
    x = np.random.default_rng(2).standard_normal((1, 32, 10, 10)).astype("float32")
    np.testing.assert_allclose(_run(mod, x), _reference(x, w, b, **kwargs), rtol=1e-4, atol=1e-4)


def test_gpu_builds_keep_the_stock_ops():
    mod, _, _ = _chain()
    assert "channel_norm" not in _kernels(mod, {"kind": "opencl", "device": "mali", "host": ARM64})


def test_every_norm_of_the_model_is_one_kernel(host_kernels):
    """Conv2Former-N: 5 shapes of channel_norm (4 stages + head), none of the old three-kernel pieces."""
    norms = [n for n in host_kernels if n.startswith("channel_norm")]
    assert len(norms) == 5
    leftovers = [n for n in host_kernels if n.startswith(("power", "fused_mean"))]
    assert not leftovers, leftovers
