"""Blocked activations (NCHW{b}c): a small network with every operator family of Conv2Former, built
through `tvm_build` with its activations blocked, computes what torch computes; channel counts that
are no multiple of the lanes stay NCHW, with a transpose only where the two layouts meet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from c2f_edge.backend import pipeline, tvm_build
from c2f_edge.backend.passes.block_channels import CONV_BLOCK
from tests.fixtures.schedules import ARM64, HOST  # HOST: AVX2, blocks of 8 channels

EPS = 1e-6


def _weights(c, hidden, seed=0):
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype("float32")

    return {"stem": w(c, 3, 3, 3), "g": 1 + w(c), "b": w(c), "a": w(c, c, 1, 1), "ab": w(1, c, 1, 1),
            "dw": w(c, 1, 5, 5), "v": w(c, c, 1, 1), "fc1": w(hidden, c, 1, 1), "fc1b": w(1, hidden, 1, 1),
            "dw3": w(hidden, 1, 3, 3), "fc2": w(c, hidden, 1, 1), "down": w(2 * c, c, 2, 2),
            "head": w(10, 2 * c)}


def _relax_model(p, size):
    from tvm import relax

    c = p["a"].shape[0]
    x = relax.Var("input", relax.TensorType((1, 3, size, size), "float32"))
    bb = relax.BlockBuilder()
    op, k = relax.op, relax.const
    with bb.function("main", [x]):
        with bb.dataflow():
            s = bb.emit(op.nn.gelu(op.nn.conv2d(x, k(p["stem"]), strides=[2, 2], padding=[1, 1])))
            n = bb.emit(op.nn.layer_norm(s, k(p["g"]), k(p["b"]), axes=[1], epsilon=EPS))
            a = bb.emit(op.nn.gelu(op.add(op.nn.conv2d(n, k(p["a"])), k(p["ab"]))))
            a = bb.emit(op.nn.conv2d(a, k(p["dw"]), padding=[2, 2], groups=c))
            v = bb.emit(op.nn.conv2d(n, k(p["v"])))
            s = bb.emit(op.add(s, op.multiply(a, v)))
            h = bb.emit(op.nn.gelu(op.add(op.nn.conv2d(s, k(p["fc1"])), k(p["fc1b"]))))
            h = bb.emit(op.add(h, op.nn.gelu(op.nn.conv2d(h, k(p["dw3"]), padding=[1, 1], groups=p["dw3"].shape[0]))))
            s = bb.emit(op.add(s, op.nn.conv2d(h, k(p["fc2"]))))
            d = bb.emit(op.nn.conv2d(s, k(p["down"]), strides=[2, 2]))
            pooled = bb.emit(op.mean(d, axis=[2, 3]))
            out = bb.emit_output(op.matmul(pooled, op.permute_dims(k(p["head"]))))
        bb.emit_func_output(out)
    return bb.get()


def _torch_model(p, x):
    t = {name: torch.from_numpy(v) for name, v in p.items()}
    c = p["a"].shape[0]
    s = F.gelu(F.conv2d(x, t["stem"], stride=2, padding=1))
    u = s.mean(1, keepdim=True)
    var = ((s - u) ** 2).mean(1, keepdim=True)
    n = (s - u) / torch.sqrt(var + EPS) * t["g"][:, None, None] + t["b"][:, None, None]
    a = F.conv2d(F.gelu(F.conv2d(n, t["a"]) + t["ab"]), t["dw"], padding=2, groups=c)
    s = s + a * F.conv2d(n, t["v"])
    h = F.gelu(F.conv2d(s, t["fc1"]) + t["fc1b"])
    h = h + F.gelu(F.conv2d(h, t["dw3"], padding=1, groups=h.shape[1]))
    s = s + F.conv2d(h, t["fc2"])
    return F.conv2d(s, t["down"], stride=2).mean((2, 3)) @ t["head"].T


def _kernels(mod, target):
    import tvm

    fused = pipeline.legalize_and_fuse(mod, target)
    return {gv.name_hint: f.script() for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


def _run(mod, x):
    import tvm
    from tvm import relax

    ex = tvm_build.build(mod, None, HOST)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("channels, hidden, blocked", [(16, 64, True), (12, 36, False)],
                         ids=["blocked", "not-a-multiple"])
def test_every_operator_family_computes_what_torch_computes(channels, hidden, blocked):
    p = _weights(channels, hidden)
    x = np.random.default_rng(1).standard_normal((1, 3, 20, 20)).astype("float32")
    mod = _relax_model(p, 20)
    kernels = _kernels(mod, HOST)
    assert any("nchwc_norm" in s for s in kernels.values()) == blocked
    if blocked:
        # NCHW image in, blocked from the stem on: no activation is ever transposed
        assert any(CONV_BLOCK in s for s in kernels.values())
        assert not [n for n in kernels if "transpose" in n], sorted(kernels)
    got = _run(mod, x)
    want = _torch_model(p, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_layouts_meet_through_a_transpose():
    """16 -> 12 -> 16 channels with 8 lanes: the 12-channel tensor stays NCHW, the others are blocked."""
    from tvm import relax

    rng = np.random.default_rng(2)
    w1, w2 = (rng.standard_normal(s).astype("float32") * 0.3 for s in [(12, 16, 1, 1), (16, 12, 1, 1)])
    x = relax.Var("input", relax.TensorType((1, 16, 6, 6), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w1)))
            z = bb.emit(relax.op.nn.conv2d(relax.op.nn.gelu(y), relax.const(w2)))
            out = bb.emit_output(relax.op.add(z, x))
        bb.emit_func_output(out)
    mod = bb.get()
    kernels = _kernels(mod, HOST)
    assert any(CONV_BLOCK in s for s in kernels.values())
    assert [n for n in kernels if "transpose" in n]
    xv = rng.standard_normal((1, 16, 6, 6)).astype("float32")
    xt = torch.from_numpy(xv)
    want = (F.conv2d(F.gelu(F.conv2d(xt, torch.from_numpy(w1))), torch.from_numpy(w2)) + xt).numpy()
    np.testing.assert_allclose(_run(mod, xv), want, rtol=1e-4, atol=1e-4)


def test_gpu_targets_keep_nchw():
    p = _weights(16, 64)
    kernels = _kernels(_relax_model(p, 20), {"kind": "opencl", "host": ARM64})
    assert not any(CONV_BLOCK in s or "nchwc" in s for s in kernels.values())


def test_global_pool_with_kept_dims_reads_the_blocks():
    """ONNX GlobalAveragePool keeps H and W: pooled on the blocks, no transpose."""
    from tvm import relax

    w = np.random.default_rng(3).standard_normal((16, 3, 3, 3)).astype("float32")
    x = relax.Var("input", relax.TensorType((1, 3, 8, 8), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.gelu(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1])))
            out = bb.emit_output(relax.op.mean(y, axis=[2, 3], keepdims=True))
        bb.emit_func_output(out)
    mod = bb.get()
    kernels = _kernels(mod, HOST)
    assert any(CONV_BLOCK in s for s in kernels.values())
    assert not [n for n in kernels if "transpose" in n], sorted(kernels)
    xv = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype("float32")
    want = F.gelu(F.conv2d(torch.from_numpy(xv), torch.from_numpy(w), padding=1)).mean((2, 3), keepdim=True)
    np.testing.assert_allclose(_run(mod, xv), want.numpy(), rtol=1e-4, atol=1e-5)


def test_fp16_convs_sum_in_two_levels():
    """An fp16 1x1 conv over 2,048 inputs: partial sums of 16 products, added to the running sum, are
    several times closer to the exact sum than one running fp16 sum (the error that kept Conv2Former-N
    out of the fp16 class), and the conv is still all fp16."""
    import dataclasses

    import tvm
    from tvm import relax

    from c2f_edge.backend.precision import FP16

    k, c = 2048, 16
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((c, k, 1, 1)) / np.sqrt(k)).astype("float16").astype("float32")
    xv = np.abs(rng.standard_normal((1, k, 4, 4))).astype("float16").astype("float32")  # same-sign: sums grow
    x = relax.Var("input", relax.TensorType(xv.shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, relax.const(w)))
        bb.emit_func_output(out)
    mod = bb.get()
    exact = np.einsum("ok,nkhw->nohw", w[:, :, 0, 0].astype(np.float64), xv.astype(np.float64))

    def err(precision):
        kernels = _kernels_at(mod, precision)
        ex = tvm_build.build(mod, None, HOST, precision=precision)
        got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(xv)).numpy()
        return float(np.abs(got - exact).max()), kernels

    chunked, kernels = err(FP16)
    conv = next(s for s in kernels.values() if CONV_BLOCK in s)
    assert "float16" in conv and "float32" not in conv
    plain, _ = err(dataclasses.replace(FP16, conv_chunk=0))
    assert chunked * 2.5 < plain, (chunked, plain)  # measured 0.0091 against 0.033


def _kernels_at(mod, precision):
    import tvm

    fused = pipeline.legalize_and_fuse(mod, HOST, precision=precision)
    return {gv.name_hint: f.script() for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
