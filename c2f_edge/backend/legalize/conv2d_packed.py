"""CPU lowering of dense convolutions with prepacked weights.

A dense NCHW conv reads its weight as OIHW: along the reduction the weight is strided, and the
output's innermost axis (a 56/28/14/7-pixel row) rarely fills whole vector registers. Repacking the
weight once, at compile time, to [O/P, I, kh, kw, P] (P = a multiple of the vector lanes) makes a
block of P output channels one contiguous stream: the CPU schedules then vectorize over output
channels, with every activation value a broadcast. Activations stay NCHW, so nothing else in the
graph changes and no transpose runs at inference time.
"""

from __future__ import annotations

from c2f_edge.backend.ir import static_shape

PACKED_BLOCK = "conv2d_nchw_packed"


def pack_width(out_channels: int, lanes: int) -> int:
    """Output channels per packed block: one vector register's worth (the schedules' tile), or 0."""
    return lanes if out_channels % lanes == 0 else 0


def pack_oihw(weight, p: int):
    """numpy OIHW -> [O/p, I, kh, kw, p]."""
    o, i, kh, kw = weight.shape
    return weight.reshape(o // p, p, i, kh, kw).transpose(0, 2, 3, 4, 1).copy()


def conv2d_legalizer(lanes: int):
    """A LegalizeOps customization for relax.nn.conv2d: dense NCHW convs with constant weights get
    the packed compute; everything else (depthwise, other layouts, weights as inputs) the stock one."""
    import tvm
    from tvm import relax
    from tvm.relax.transform.legalize_ops.nn import _nn_conv2d as stock

    def legalize(bb, call):
        a = call.attrs
        weight = call.args[1]
        if (int(a.groups) != 1 or a.data_layout != "NCHW" or a.kernel_layout != "OIHW"
                or a.out_layout != "NCHW" or not isinstance(weight, tvm.ir.expr.Constant)):
            return stock(bb, call)
        if static_shape(call.args[0]) is None:
            return stock(bb, call)  # the packed compute is written for static shapes
        w = weight.value.numpy()
        p = pack_width(w.shape[0], lanes)
        if not p or (a.out_dtype and str(a.out_dtype) not in ("", str(w.dtype))):
            return stock(bb, call)
        packed = relax.const(pack_oihw(w, p))
        strides = [int(s) for s in a.strides]
        padding = [int(s) for s in a.padding]
        dilation = [int(s) for s in a.dilation]
        return bb.call_te(_conv_packed, call.args[0], packed, strides, padding, dilation,
                          primfunc_name_hint="conv2d")

    return legalize


def _conv_packed(data, wp, strides, padding, dilation):
    from tvm import te, topi

    n, _, h, w = (int(d) for d in data.shape)
    blocks, ci, kh, kw, p = (int(d) for d in wp.shape)
    top, left, bottom, right = padding if len(padding) == 4 else (padding[0], padding[1], padding[0], padding[1])
    if any((top, left, bottom, right)):
        data = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right], name="pad_temp")
    sh, sw = strides
    dh, dw = dilation
    oh = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    ow = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    rc = te.reduce_axis((0, ci), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, blocks * p, oh, ow),
        lambda b, f, y, x: te.sum(data[b, rc, y * sh + ry * dh, x * sw + rx * dw]
                                  * wp[f // p, rc, ry, rx, f % p], axis=[rc, ry, rx]),
        name=PACKED_BLOCK)
