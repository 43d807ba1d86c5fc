"""Legalization of the channels-first LayerNorm (`nn.layer_norm(axes=[1])` on NCHW, made by the
fuse_channel_norm pass) as one kernel: the channel sum, the sum of squared deviations, then the
normalization, with the same arithmetic as the ONNX graph. The block names are what the
`ChannelNorm` schedule rule recognizes.

`stats` is the dtype of the sums, mean and variance: fp32 in an fp16 build (backend/precision.py), where
the kernel reads fp16, computes its statistics and the normalization in fp32 and writes fp16. A norm of
another shape (the classifier's, over the last axis) gets the stock compute with the same casts."""

from __future__ import annotations

from c2f_edge.backend.ir import static_shape

SUM_BLOCK = "channel_sum"
SQDEV_BLOCK = "channel_sqdev"
NORM_BLOCK = "channel_norm"


def layer_norm_legalizer(stats: str = "float32"):
    """A LegalizeOps customization: 4-D layer_norm over axis 1 -> the one-kernel compute below."""
    from tvm.relax.transform.legalize_ops.nn import _nn_layer_norm as stock

    def legalize(bb, call):
        x = call.args[0]
        shape = static_shape(x)
        eps = float(call.attrs.epsilon)
        if shape is not None and len(shape) == 4 and [int(a) for a in call.attrs.axes] in ([1], [-3]):
            return bb.call_te(_channel_norm, x, call.args[1], call.args[2], eps, stats,
                              primfunc_name_hint="channel_norm")
        if str(x.struct_info.dtype) != stats:
            axes = [int(a) for a in call.attrs.axes]
            return bb.call_te(_cast_norm, x, call.args[1], call.args[2], axes, eps, stats,
                              primfunc_name_hint="layer_norm")
        return stock(bb, call)

    return legalize


def as_stats(v, stats: str):
    return v if str(v.dtype) == stats else v.astype(stats)


def _channel_norm(x, gamma, beta, epsilon, stats="float32"):
    from tvm import te, tirx

    n, c, h, w = x.shape
    inv_c = tirx.const(1.0 / int(c), stats)
    rc = te.reduce_axis((0, c), name="rc")
    total = te.compute((n, 1, h, w), lambda b, _, i, j: te.sum(as_stats(x[b, rc, i, j], stats), axis=rc),
                       name=SUM_BLOCK)
    rd = te.reduce_axis((0, c), name="rd")

    def sqdev(b, _, i, j):
        d = as_stats(x[b, rd, i, j], stats) - total[b, 0, i, j] * inv_c
        return te.sum(d * d, axis=rd)

    sq = te.compute((n, 1, h, w), sqdev, name=SQDEV_BLOCK)
    eps = tirx.const(epsilon, stats)

    def norm(b, k, i, j):
        y = (as_stats(x[b, k, i, j], stats) - total[b, 0, i, j] * inv_c) / te.sqrt(sq[b, 0, i, j] * inv_c + eps) \
            * as_stats(gamma[k], stats) + as_stats(beta[k], stats)
        return y if stats == str(x.dtype) else y.astype(x.dtype)

    return te.compute(x.shape, norm, name=NORM_BLOCK)


def _cast_norm(x, gamma, beta, axes, epsilon, stats):
    """The stock LayerNorm computed in `stats`, read from and written back to x's dtype."""
    from tvm import topi

    y = topi.nn.layer_norm(topi.cast(x, stats), topi.cast(gamma, stats), topi.cast(beta, stats), axes, epsilon)
    return topi.cast(y, x.dtype)
