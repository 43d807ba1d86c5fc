"""Legalization of the channels-first LayerNorm (`nn.layer_norm(axes=[1])` on NCHW, made by the
fuse_channel_norm pass) as one kernel: the channel sum, the sum of squared deviations, then the
normalization, with the same arithmetic as the ONNX graph. The block names are what the
`ChannelNorm` schedule rule recognizes."""

from __future__ import annotations

from c2f_edge.backend.ir import static_shape

SUM_BLOCK = "channel_sum"
SQDEV_BLOCK = "channel_sqdev"
NORM_BLOCK = "channel_norm"


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
