"""The NumPy MIL interpreter: op semantics against torch, fp16 emulation, and unknown ops."""

import numpy as np
import pytest
import torch

from c2f_edge.core.errors import UnsupportedError
from c2f_edge.coreml import mil_eval
from c2f_edge.coreml._ct import ct


def _program(build, shape=(1, 4, 9, 9)):
    ct()
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=shape)])
    def prog(x):
        return build(mb, x)
    return prog


@pytest.mark.parametrize("groups,stride,pad,dil,k", [(1, 1, 1, 1, 3), (1, 2, 1, 1, 3), (4, 1, 5, 1, 11),
                                                      (2, 1, 0, 2, 3), (1, 2, 0, 1, 2)])
def test_conv_matches_torch(groups, stride, pad, dil, k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 13, 13)).astype(np.float32)
    w = rng.standard_normal((8 if groups != 4 else 4, 4 // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(w.shape[0]).astype(np.float32)

    class Op:
        name = "conv_test"
    got = mil_eval.conv(Op, x, w, strides=(stride, stride), pad_type="custom", pad=[pad] * 4,
                        dilations=(dil, dil), groups=groups, bias=b)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                     stride=stride, padding=pad, dilation=dil, groups=groups).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)


def test_unknown_op_is_an_error_that_names_it():
    prog = _program(lambda mb, x: mb.relu(x=mb.add(x=x, y=1.0)))
    with pytest.raises(UnsupportedError, match="relu"):
        mil_eval.Interpreter(prog)


def test_fp16_mode_rounds_each_op_and_overflows_like_fp16():
    # x*x for x=300 is 90000: representable in fp32, +inf in fp16.
    prog = _program(lambda mb, x: mb.mul(x=mb.mul(x=x, y=x), y=0.5), shape=(1, 3))
    x = np.array([[300.0, 1.0 / 3.0, 2.0]], np.float32)
    out32, _ = mil_eval.Interpreter(prog, "fp32").run({"x": x})
    out16, inter = mil_eval.Interpreter(prog, "fp16").run({"x": x}, keep=True)
    (o32,), (o16,) = out32.values(), out16.values()
    assert o32[0, 0] == pytest.approx(45000.0)
    assert np.isinf(o16[0, 0])  # overflowed at the first mul, before the *0.5
    third = np.float32(np.float16(1 / 3))
    assert o16[0, 1] == np.float32(np.float16(third * third * np.float32(0.5)))
    assert o16[0, 1] != o32[0, 1]
    assert len(inter) == 2 and all(np.isfinite(v).sum() == 2 for v in inter.values())


def test_bad_mode():
    prog = _program(lambda mb, x: mb.add(x=x, y=1.0))
    with pytest.raises(UnsupportedError, match="mode"):
        mil_eval.Interpreter(prog, "int8")
