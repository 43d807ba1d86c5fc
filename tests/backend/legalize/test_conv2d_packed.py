"""Dense convs with prepacked weights: the packing, and convs of every stride/padding/dilation the
packed compute handles, built end to end through `tvm_build` and checked against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2f_edge.backend import pipeline, tvm_build
from c2f_edge.backend.legalize.conv2d_packed import PACKED_BLOCK, pack_oihw, pack_width
from tests.fixtures.schedules import ARM64, HOST


def test_pack_width_is_one_register_of_output_channels():
    assert pack_width(64, 8) == 8 and pack_width(32, 4) == 4 and pack_width(1280, 16) == 16
    assert pack_width(12, 8) == 0  # not a whole number of registers: the stock conv


def test_pack_oihw_puts_a_block_of_output_channels_innermost():
    w = np.arange(16 * 3 * 2 * 2, dtype="float32").reshape(16, 3, 2, 2)
    p = pack_oihw(w, 8)
    assert p.shape == (2, 3, 2, 2, 8) and p.flags["C_CONTIGUOUS"]
    for o in range(16):
        assert np.array_equal(p[o // 8, :, :, :, o % 8], w[o])


def _conv_module(w, stride, padding, dilation, groups=1):
    from tvm import relax

    x = relax.Var("input", relax.TensorType((1, w.shape[1] * groups, 15, 15), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=padding,
                                           dilation=dilation, groups=groups))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


CASES = [((1, 1), (0, 0), (1, 1)), ((2, 2), (0, 0), (1, 1)), ((1, 1), (1, 1), (1, 1)),
         ((2, 2), (1, 2), (1, 1)), ((1, 1), (2, 2), (2, 2))]


@pytest.mark.parametrize("stride,padding,dilation", CASES)
@pytest.mark.parametrize("kernel", [1, 3])
def test_packed_conv_matches_torch(stride, padding, dilation, kernel):
    import tvm
    from tvm import relax

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 5, kernel, kernel)).astype("float32")
    x = rng.standard_normal((1, 5, 15, 15)).astype("float32")
    mod = _conv_module(w, stride, padding, dilation)
    fused = pipeline.legalize_and_fuse(mod, HOST, blocked=False)
    scripts = [f.script() for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any(PACKED_BLOCK in s for s in scripts)  # the packed compute, not the stock one
    ex = tvm_build.build(mod, None, HOST)  # blocked output (backend/passes/block_channels.py) unless dilated
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                                      padding=padding, dilation=dilation).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_depthwise_and_non_register_multiple_convs_keep_the_stock_compute():
    import tvm

    rng = np.random.default_rng(1)
    for w, groups in [(rng.standard_normal((8, 1, 3, 3)).astype("float32"), 8),
                      (rng.standard_normal((6, 8, 1, 1)).astype("float32"), 1)]:
        fused = pipeline.legalize_and_fuse(_conv_module(w, (1, 1), (1, 1), (1, 1), groups=groups), HOST,
                                            blocked=False)
        assert not any(PACKED_BLOCK in f.script() for _, f in fused.functions_items()
                       if isinstance(f, tvm.tirx.PrimFunc))


def test_gpu_targets_keep_the_stock_conv():
    import tvm

    w = np.ones((16, 4, 1, 1), dtype="float32")
    gpu = {"kind": "opencl", "host": ARM64}
    fused = pipeline.legalize_and_fuse(_conv_module(w, (1, 1), (0, 0), (1, 1)), gpu)
    assert not any(PACKED_BLOCK in f.script() for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def test_a_symbolic_batch_keeps_the_stock_conv():
    import tvm
    from tvm import relax

    n = tvm.tirx.Var("n", "int64")
    x = relax.Var("input", relax.TensorType((n, 4, 8, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.conv2d(x, relax.const(np.ones((16, 4, 1, 1), "float32")))))
        bb.emit_func_output(out)
    fused = pipeline.legalize_and_fuse(bb.get(), HOST)
    assert PACKED_BLOCK not in fused.script() and "nchwc" not in fused.script()
