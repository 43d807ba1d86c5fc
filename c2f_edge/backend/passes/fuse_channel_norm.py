"""The channels-first LayerNorm as one CPU kernel.

Conv2Former normalizes over channels in NCHW (`(x - mean) / sqrt(var + eps) * w + b`, mean and var
over axis 1). Exported to ONNX and imported into Relax that is nine ops, which FuseOps leaves as
three kernels (mean-subtract, power, mean-normalize) with two full-size temporaries: 3 launches and
about 3 passes over the tensor per norm, 32 norms per image. Here the chain is rewritten into
`nn.layer_norm(axes=[1])` and legalized to one kernel with the same arithmetic (mean, then the mean
of squared deviations, then divide by the square root), which the `ChannelNorm` CPU rule schedules
row by row: the statistics of a pixel row stay in registers while the row is normalized.
"""

from __future__ import annotations

from c2f_edge.backend.legalize.conv2d_packed import static_shape

SUM_BLOCK = "channel_sum"
SQDEV_BLOCK = "channel_sqdev"
NORM_BLOCK = "channel_norm"


def fuse_channel_norm():
    """A Relax pass: the ONNX-imported channels-first LayerNorm chain -> nn.layer_norm(axes=[1])."""
    import tvm
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    x, w, b = wildcard(), wildcard(), wildcard()
    mean = is_op("relax.mean")(x)
    dev = is_op("relax.subtract")(x, mean)
    sq = is_op("relax.power")(dev, is_const())
    var = is_op("relax.mean")(sq)
    eps = is_const()
    std = is_op("relax.sqrt")(is_op("relax.add")(var, eps))
    scaled = is_op("relax.multiply")(w, is_op("relax.divide")(dev, std))
    out = is_op("relax.add")(scaled, b)

    def rewriter(expr, m):
        data = m[x]
        shape = static_shape(data)
        if shape is None or len(shape) != 4:
            return expr
        c = shape[1]
        for node in (m[mean], m[var]):
            if [int(a) for a in node.attrs.axis] != [1] or not node.attrs.keepdims:
                return expr
        if _scalar(m[sq].args[1]) != 2.0:
            return expr
        epsilon = _scalar(m[eps])
        gamma, beta = m[w], m[b]
        if epsilon is None or static_shape(gamma) not in ([c, 1, 1], [1, c, 1, 1]) \
                or static_shape(beta) not in ([c, 1, 1], [1, c, 1, 1]):
            return expr
        return relax.op.nn.layer_norm(data, relax.op.reshape(gamma, [c]), relax.op.reshape(beta, [c]),
                                      axes=[1], epsilon=epsilon)

    @tvm.transform.module_pass(opt_level=0, name="c2f_edge_fuse_channel_norm")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gv] = rewrite_call(out, rewriter, func)
        return relax.transform.DeadCodeElimination()(mod)

    return _pass


def layer_norm_legalizer():
    """A LegalizeOps customization: 4-D layer_norm over axis 1 -> the one-kernel compute below."""
    from tvm.relax.transform.legalize_ops.nn import _nn_layer_norm as stock

    def legalize(bb, call):
        shape = static_shape(call.args[0])
        if shape is None or len(shape) != 4 or [int(a) for a in call.attrs.axes] not in ([1], [-3]):
            return stock(bb, call)
        return bb.call_te(_channel_norm, call.args[0], call.args[1], call.args[2], float(call.attrs.epsilon),
                          primfunc_name_hint="channel_norm")

    return legalize


def _channel_norm(x, gamma, beta, epsilon):
    from tvm import te, tirx

    n, c, h, w = x.shape
    inv_c = tirx.const(1.0 / int(c), x.dtype)
    rc = te.reduce_axis((0, c), name="rc")
    total = te.compute((n, 1, h, w), lambda b, _, i, j: te.sum(x[b, rc, i, j], axis=rc), name=SUM_BLOCK)
    rd = te.reduce_axis((0, c), name="rd")

    def sqdev(b, _, i, j):
        d = x[b, rd, i, j] - total[b, 0, i, j] * inv_c
        return te.sum(d * d, axis=rd)

    sq = te.compute((n, 1, h, w), sqdev, name=SQDEV_BLOCK)
    eps = tirx.const(epsilon, x.dtype)
    return te.compute(
        x.shape,
        lambda b, k, i, j: (x[b, k, i, j] - total[b, 0, i, j] * inv_c) / te.sqrt(sq[b, 0, i, j] * inv_c + eps)
        * gamma[k] + beta[k],
        name=NORM_BLOCK)


def _scalar(expr):
    """The value of a one-element constant, else None."""
    import tvm

    if not isinstance(expr, tvm.ir.expr.Constant):
        return None
    value = expr.value.numpy()
    return float(value.reshape(-1)[0]) if value.size == 1 else None
