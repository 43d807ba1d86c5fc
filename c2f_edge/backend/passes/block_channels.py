"""Blocked activations (NCHW{b}c) for the CPU: channels split into blocks of one vector register.

In plain NCHW a 1x1 conv reads one stream per input channel (64 to 2048 of them), too many for the
hardware prefetchers: inside the model, where the input was just written by another kernel and is no
longer in L2, the stage-0 1x1 convs ran 2-2.5x slower than when timed alone. With the channels in
blocks of b (the vector lanes) every kernel reads and writes a few long contiguous streams: a 1x1
conv is a GEMM over [pixels, b] panels, a depthwise conv and every elementwise op vectorize over the
block, and the LayerNorm reduces over C/b blocks of one vector.

`to_blocked(b)` rewrites the main function: convs, depthwise convs, LayerNorms, the elementwise ops
between them and the global mean work on [N, C/b, H, W, b] tensors. Anything else, and any tensor
whose channels are no multiple of b, gets NCHW through a transpose where the two layouts meet; in
Conv2Former-N that never happens between the image and the classifier.
"""

from __future__ import annotations

from c2f_edge.backend.ir import static_shape
from c2f_edge.backend.legalize.conv2d_packed import pack_oihw

CONV_BLOCK = "conv2d_nchwc"
NORM_BLOCKS = ("nchwc_sum", "nchwc_mean", "nchwc_sqdev", "nchwc_var", "nchwc_norm")
_ELEMWISE = ("relax.add", "relax.subtract", "relax.multiply", "relax.divide")


def to_blocked(b: int, norm_stats: str = "float32", conv_chunk: int = 0):
    """A Relax pass over `main` (static shapes, constant weights), before LegalizeOps. norm_stats: the
    dtype of the LayerNorm statistics; conv_chunk: in an fp16 graph, the products a dense conv sums into
    a partial sum before adding it to the output's (0: one running sum). See backend/precision.py."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="c2f_edge_to_blocked")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function) and gv.name_hint == "main":
                new = _Rewriter(b, norm_stats, conv_chunk).rewrite(func)
                if new is not None:
                    for ngv, nfunc in new.functions.items():
                        if ngv.name_hint == "main":
                            mod[gv] = nfunc
                        else:
                            mod[ngv] = nfunc
        return relax.transform.DeadCodeElimination()(mod)

    return _pass


class _Rewriter:
    def __init__(self, b: int, norm_stats: str = "float32", conv_chunk: int = 0):
        self.b = b
        self.norm_stats = norm_stats
        self.conv_chunk = conv_chunk
        self.nchw = {}  # old var -> new expr, NCHW
        self.blocked = {}  # old var -> new expr, [N, C/b, H, W, b]
        self.tuples = {}  # old tuple var -> the old Tuple

    def rewrite(self, func):
        from tvm import relax

        body = func.body
        if not isinstance(body, relax.SeqExpr) or len(body.blocks) != 1 \
                or not isinstance(body.blocks[0], relax.DataflowBlock):
            return None
        bb = self.bb = relax.BlockBuilder()
        params = list(func.params)
        with bb.function("main", params, attrs=dict(func.attrs) if func.attrs else None, pure=True):
            with bb.dataflow():
                for binding in body.blocks[0].bindings:
                    self.visit(binding.var, binding.value)
                out = bb.emit_output(self.get(body.body))
            bb.emit_func_output(out)
        return bb.get()

    # -- values -----------------------------------------------------------------------------------

    def is_act(self, expr) -> bool:
        """A 4-D activation this pass can block: static shape, channels a multiple of b."""
        shape = static_shape(expr)
        return shape is not None and len(shape) == 4 and shape[1] % self.b == 0 and shape[2] * shape[3] > 1

    def is_channel_vec(self, expr) -> bool:
        shape = static_shape(expr)
        return shape is not None and len(shape) == 4 and shape[0] == 1 and shape[2] == shape[3] == 1 \
            and shape[1] % self.b == 0

    def get(self, expr):
        """The new NCHW form of an old expression."""
        from tvm import relax

        if isinstance(expr, relax.Var):
            if expr in self.nchw:
                return self.nchw[expr]
            if expr in self.tuples:
                self.nchw[expr] = self.bb.emit(self.get(self.tuples[expr]))
                return self.nchw[expr]
            if expr in self.blocked:
                self.nchw[expr] = self.bb.emit(_unblock(self.blocked[expr], static_shape(expr)))
                return self.nchw[expr]
            return expr  # a function parameter
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.get(f) for f in expr.fields])
        if isinstance(expr, relax.Call):
            return relax.Call(expr.op, [self.get(a) for a in expr.args], expr.attrs, expr.ty_args)
        if isinstance(expr, relax.TupleGetItem):
            return relax.TupleGetItem(self.get(expr.tuple_value), expr.index)
        return expr

    def get_blocked(self, expr):
        """The new blocked form of an old activation (transposed from NCHW if it has none)."""
        from tvm import relax

        if isinstance(expr, relax.Var) and expr in self.blocked:
            return self.blocked[expr]
        new = self.bb.emit(_block(self.get(expr), static_shape(expr), self.b))
        if isinstance(expr, relax.Var):
            self.blocked[expr] = new
        return new

    def has_blocked(self, expr) -> bool:
        from tvm import relax

        return isinstance(expr, relax.Var) and expr in self.blocked

    # -- bindings ---------------------------------------------------------------------------------

    def visit(self, var, value):
        import tvm
        from tvm import relax

        if isinstance(value, relax.Tuple):
            self.tuples[var] = value  # emitted only if used as a whole (see get)
            return
        if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var) \
                and value.tuple_value in self.tuples:
            field = self.tuples[value.tuple_value].fields[value.index]
            if self.has_blocked(field):
                self.blocked[var] = self.blocked[field]
                return
        if isinstance(value, relax.Var) and self.has_blocked(value):
            self.blocked[var] = self.blocked[value]
            return
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            if value.op.name == "relax.mean" and self.has_blocked(value.args[0]) and _spatial_axes(value):
                # the global pool: over H and W of the blocks, then [N, C/b, (1, 1,) b] is [N, C(, 1, 1)]
                pooled = relax.op.mean(self.blocked[value.args[0]], axis=[2, 3], keepdims=bool(value.attrs.keepdims))
                self.nchw[var] = self.bb.emit(relax.op.reshape(pooled, static_shape(var)))
                return
            new = self.visit_call(var, value)
            if new is not None:
                self.blocked[var] = self.bb.emit(new)
                return
        self.nchw[var] = self.bb.emit(self.get(value))

    def visit_call(self, var, call):
        from tvm import relax

        name = call.op.name
        if name == "relax.nn.conv2d":
            return self.conv(var, call)
        if not self.is_act(var):
            return None
        if name == "relax.nn.gelu" and self.has_blocked(call.args[0]):
            return relax.op.nn.gelu(self.blocked[call.args[0]])
        if name == "relax.nn.layer_norm" and self.has_blocked(call.args[0]) \
                and [int(a) for a in call.attrs.axes] in ([1], [-3]):
            return self.norm(call)
        if name in _ELEMWISE:
            a, c = call.args
            if not (self.has_blocked(a) or self.has_blocked(c)):
                return None
            args = []
            for x in (a, c):
                if self.is_act(x) and static_shape(x) == static_shape(var):
                    args.append(self.get_blocked(x))
                elif self.is_channel_vec(x):
                    shape = static_shape(x)
                    args.append(relax.op.reshape(self.get(x), [1, shape[1] // self.b, 1, 1, self.b]))
                else:
                    return None
            return relax.Call(call.op, args, call.attrs, call.ty_args)
        return None

    def conv(self, var, call):
        import tvm
        from tvm import relax

        a = call.attrs
        data, weight = call.args
        if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout != "NCHW" \
                or not isinstance(weight, tvm.ir.expr.Constant) or not self.is_act(var) \
                or (a.out_dtype and str(a.out_dtype) not in ("", str(weight.value.dtype))):
            return None
        w = weight.value.numpy()
        o, i, kh, kw = w.shape
        groups = int(a.groups)
        strides = [int(s) for s in a.strides]
        padding = [int(p) for p in a.padding]
        dilation = [int(d) for d in a.dilation]
        if dilation != [1, 1]:
            return None
        b = self.b
        if groups == o and i == 1 and self.is_act(data):  # depthwise
            wp = relax.const(w.reshape(o // b, b, kh, kw).transpose(0, 2, 3, 1).copy())
            return self.bb.call_te(_dw_blocked, self.get_blocked(data), wp, strides, padding,
                                   primfunc_name_hint="dwconv2d")
        if groups != 1:
            return None
        if self.is_act(data):
            wp = relax.const(w.reshape(o // b, b, i // b, b, kh, kw).transpose(0, 2, 4, 5, 3, 1).copy())
            fp16 = self.conv_chunk and str(w.dtype) == "float16"
            chunk = self.conv_chunk if fp16 and b % self.conv_chunk == 0 else 0
            return self.bb.call_te(_conv_blocked, self.get_blocked(data), wp, strides, padding, chunk,
                                   primfunc_name_hint="conv2d")
        if static_shape(data) is None:
            return None
        # e.g. the stem: NCHW image in, blocked out; the weight packed as for an NCHW conv
        wp = relax.const(pack_oihw(w, b))
        return self.bb.call_te(_conv_nchw_in, self.get(data), wp, strides, padding,
                               primfunc_name_hint="conv2d")

    def norm(self, call):
        from tvm import relax

        x = self.blocked[call.args[0]]
        c = static_shape(call.args[0])[1]
        gamma = relax.op.reshape(self.get(call.args[1]), [c // self.b, self.b])
        beta = relax.op.reshape(self.get(call.args[2]), [c // self.b, self.b])
        return self.bb.call_te(_norm_blocked, x, self.bb.emit(gamma), self.bb.emit(beta),
                               float(call.attrs.epsilon), self.norm_stats, primfunc_name_hint="channel_norm")


def _spatial_axes(call) -> bool:
    axes = call.attrs.axis
    return axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]


def _block(x, shape, b):
    from tvm import relax

    n, c, h, w = shape
    return relax.op.permute_dims(relax.op.reshape(x, [n, c // b, b, h, w]), [0, 1, 3, 4, 2])


def _unblock(x, shape):
    from tvm import relax

    n, c, h, w = shape
    return relax.op.reshape(relax.op.permute_dims(x, [0, 1, 4, 2, 3]), [n, c, h, w])


# -- TE computes ----------------------------------------------------------------------------------

def _padded(data, kh, kw, strides, padding):
    """data zero-padded in H and W (dims 2 and 3), and the output's height and width."""
    from tvm import topi

    h, w = (int(d) for d in data.shape[2:4])
    top, left, bottom, right = padding if len(padding) == 4 else (padding[0], padding[1], padding[0], padding[1])
    oh = (h + top + bottom - kh) // strides[0] + 1
    ow = (w + left + right - kw) // strides[1] + 1
    if any((top, left, bottom, right)):
        rest = [0] * (len(data.shape) - 4)
        data = topi.nn.pad(data, [0, 0, top, left, *rest], [0, 0, bottom, right, *rest], name="pad_temp")
    return data, oh, ow


def _conv_blocked(data, wp, strides, padding, chunk: int = 0):
    """data [N, I/b, H, W, b], wp [O/b, I/b, kh, kw, b_in, b_out] -> [N, O/b, OH, OW, b].

    chunk (fp16): summed in two levels: each `chunk` products (a group of lanes of one input block; the
    pipeline keeps a chunk within one block) into a partial sum, and the partial sums into the output.
    One running fp16 sum over a whole 1x1 conv (up to 2,048 products) rounds at every product; this
    rounds the large sum once per chunk, at the cost of one add per chunk (see backend/precision.py)."""
    from tvm import te

    n = int(data.shape[0])
    ob, ib, kh, kw, bi, bo = (int(d) for d in wp.shape)
    data, oh, ow = _padded(data, kh, kw, strides, padding)
    sh, sw = strides
    rc = te.reduce_axis((0, ib), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    if not chunk:
        ri = te.reduce_axis((0, bi), name="ri")
        return te.compute(
            (n, ob, oh, ow, bo),
            lambda z, f, y, x, k: te.sum(data[z, rc, y * sh + ry, x * sw + rx, ri] * wp[f, rc, ry, rx, ri, k],
                                         axis=[rc, ry, rx, ri]),
            name=CONV_BLOCK)

    def chained(terms):
        acc = terms[0]
        for t in terms[1:]:
            acc = acc + t
        return acc

    def total(z, f, y, x, k):
        partials = [chained([data[z, rc, y * sh + ry, x * sw + rx, ri] * wp[f, rc, ry, rx, ri, k]
                             for ri in range(g, g + chunk)])
                    for g in range(0, bi, chunk)]
        return te.sum(chained(partials), axis=[rc, ry, rx])

    return te.compute((n, ob, oh, ow, bo), total, name=CONV_BLOCK)


def _conv_nchw_in(data, wp, strides, padding):
    """data [N, I, H, W], wp [O/b, I, kh, kw, b] -> [N, O/b, OH, OW, b]."""
    from tvm import te

    n = int(data.shape[0])
    ob, ci, kh, kw, bo = (int(d) for d in wp.shape)
    data, oh, ow = _padded(data, kh, kw, strides, padding)
    sh, sw = strides
    rc = te.reduce_axis((0, ci), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, ob, oh, ow, bo),
        lambda z, f, y, x, k: te.sum(data[z, rc, y * sh + ry, x * sw + rx] * wp[f, rc, ry, rx, k],
                                     axis=[rc, ry, rx]),
        name=CONV_BLOCK)


def _dw_blocked(data, wp, strides, padding):
    """data [N, C/b, H, W, b], wp [C/b, kh, kw, b] -> [N, C/b, OH, OW, b]."""
    from tvm import te

    n, cb, _, _, b = (int(d) for d in data.shape)
    _, kh, kw, _ = (int(d) for d in wp.shape)
    data, oh, ow = _padded(data, kh, kw, strides, padding)
    sh, sw = strides
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, cb, oh, ow, b),
        lambda z, c, y, x, k: te.sum(data[z, c, y * sh + ry, x * sw + rx, k] * wp[c, ry, rx, k], axis=[ry, rx]),
        name="dwconv2d_nchwc")


def _norm_blocked(x, gamma, beta, epsilon, stats="float32"):
    """LayerNorm over the channels of [N, C/b, H, W, b]: sums over the blocks as vectors, then the lanes.
    The statistics and the normalization are computed in `stats`, the result stored in x's dtype."""
    from tvm import te, tirx

    from c2f_edge.backend.legalize.layer_norm import as_stats

    n, cb, h, w, b = x.shape
    inv_c = tirx.const(1.0 / (int(cb) * int(b)), stats)
    sum_name, mean_name, sqdev_name, var_name, norm_name = NORM_BLOCKS
    r1 = te.reduce_axis((0, cb), name="r1")
    part = te.compute((n, h, w, b), lambda z, i, j, k: te.sum(as_stats(x[z, r1, i, j, k], stats), axis=r1),
                      name=sum_name)
    l1 = te.reduce_axis((0, b), name="l1")
    total = te.compute((n, h, w), lambda z, i, j: te.sum(part[z, i, j, l1], axis=l1), name=mean_name)
    r2 = te.reduce_axis((0, cb), name="r2")

    def sqdev(z, i, j, k):
        d = as_stats(x[z, r2, i, j, k], stats) - total[z, i, j] * inv_c
        return te.sum(d * d, axis=r2)

    sq = te.compute((n, h, w, b), sqdev, name=sqdev_name)
    l2 = te.reduce_axis((0, b), name="l2")
    var = te.compute((n, h, w), lambda z, i, j: te.sum(sq[z, i, j, l2], axis=l2), name=var_name)
    eps = tirx.const(epsilon, stats)

    def norm(z, c, i, j, k):
        y = (as_stats(x[z, c, i, j, k], stats) - total[z, i, j] * inv_c) / te.sqrt(var[z, i, j] * inv_c + eps) \
            * as_stats(gamma[c, k], stats) + as_stats(beta[c, k], stats)
        return y if stats == str(x.dtype) else y.astype(x.dtype)

    return te.compute(x.shape, norm, name=norm_name)
