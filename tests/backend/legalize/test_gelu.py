"""The GELU's rational function: built into a kernel, it is within fp32 rounding of exact GELU everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2f_edge.backend import tvm_build
from c2f_edge.backend.legalize.gelu import estrin
from tests.fixtures.schedules import HOST


@pytest.mark.parametrize("n", range(1, 9))
def test_estrin_is_the_polynomial(n):
    c = np.random.default_rng(n).standard_normal(n)
    s = np.linspace(-2, 2, 9)
    assert np.allclose(estrin(list(c), s), np.polynomial.polynomial.polyval(s, c))


def _gelu_kernel(n: int):
    from tvm import relax

    x = relax.Var("x", relax.TensorType((n,), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.gelu(x)))
        bb.emit_func_output(out)
    return tvm_build.build(bb.get(), None, HOST)


def test_the_built_gelu_is_within_fp32_rounding_of_the_exact_one():
    import tvm
    from tvm import relax

    near = np.linspace(-12, 12, 200_001).astype("float32")
    far = np.concatenate([-np.logspace(0.8, 4, 500), np.logspace(0.8, 4, 500)]).astype("float32")
    v = np.concatenate([near, far])
    ex = _gelu_kernel(len(v))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(v)).numpy()
    want = torch.nn.functional.gelu(torch.from_numpy(v).double()).numpy()
    err = np.abs(got - want)
    assert err[: len(near)].max() < 1.2e-6  # TOPI's fast_erf, used before: 1.4e-6
    assert (err[len(near):] <= 1.2e-7 * np.abs(v[len(near):])).all()  # one ulp of x past the clamp
    assert (got[v < 0] <= 0).all()  # never of the wrong sign
    llvm_ir = "".join(m.inspect_source("ll") for m in ex.mod.imports if m.kind == "llvm")
    assert "define" in llvm_ir and "erff" not in llvm_ir  # no scalar libm call left in the kernel
