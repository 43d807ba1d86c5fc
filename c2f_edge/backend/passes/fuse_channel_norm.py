"""The channels-first LayerNorm as one kernel (every CPU build, and GPU builds in fp16)

Conv2Former normalizes over channels in NCHW (`(x - mean) / sqrt(var + eps) * w + b`, mean and var
over axis 1). Exported to ONNX and imported into Relax that is nine ops, which FuseOps leaves as
three kernels (mean-subtract, power, mean-normalize) with two full-size temporaries: 3 launches and
about 3 passes over the tensor per norm, 32 norms per image. Here the chain is rewritten into
`nn.layer_norm(axes=[1])`, which legalize/layer_norm.py lowers to one kernel with the same
arithmetic (mean, then the mean of squared deviations, then divide by the square root) and the
`ChannelNorm` CPU rule schedules row by row: the statistics of a pixel row stay in registers while
the row is normalized.
"""

from __future__ import annotations

from c2f_edge.backend.ir import const_scalar, static_shape


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
        if const_scalar(m[sq].args[1]) != 2.0:
            return expr
        epsilon = const_scalar(m[eps])
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
