"""A schedule per target (`compile --split-reduction`, on where a target file says so): a 1x1 conv whose
input channels are split between the cores, each summing its own share into a partial output, then the
partials summed with the epilogue.

Why: in the MLP, fc1 and the depthwise 3x3 + GELU before fc2 give each core the same share of the hidden
channels, so each core's share sits in its own L2. The default tile of a conv whose weights outweigh its
input splits the *output* channels between the cores, so each core reads every hidden channel, half of them
from the other core's L2. Split by input channels, each core reads its own half of the input and half of
the weights. On the rocketlake Xeon (2 cores) stage 3's fc2 ran 0.2-1.1 ms faster in the model's sequence
and unchanged alone; the model 2-3% faster. By hand, stage 4's (weights dominate) was level, and stage 1's,
whose input outweighs its weights, slower: hence the criterion in `fits`.

The classifier's matrix-vector product is split the same way, for another reason: the default tile gives
each thread a strip of 8 output columns, read 32 bytes per weight row, one row per page (the hardware
prefetchers do not follow it). Split by rows, each core streams its half of the weights front to back:
the head took 0.36 -> 0.20 ms in the model's sequence on the Xeon, 0.10 -> 0.07 ms alone.

Not one of the default rules: the tuner times each kernel alone, where this gains nothing, so it would
never keep it; a kernel this schedules takes no tuning record (`split_reduction_pass` runs before the
records). Whether a build takes it is the target's (targets/*.toml `split_reduction`, compile/stage.py).
"""

from __future__ import annotations

from c2f_edge.backend.schedules.base import (
    REDUCE,
    Rule,
    buffer_bytes,
    divisor,
    is_reduction,
    loop_extent,
    root_blocks,
    uses,
    vector_factor,
)
from c2f_edge.backend.schedules.cpu_spec import MAX_ACCUMULATORS

# The marker on a kernel this rule scheduled (alongside tirx.is_scheduled, which keeps the default rules
# off it): pipeline.count_tuned does not count it as taken from the log.
ATTR = "c2f_edge.split_reduction"

# The input must be at least this many times the output: the partial outputs (one per core) are written
# and read again, and must cost well under the half of the input each core no longer reads.
MIN_INPUT_OVER_OUTPUT = 4
# A matrix-vector product's weights must outweigh the partial output rows (one per core) this many times.
MIN_WEIGHTS_OVER_PARTIALS = 16
# Weight rows per step of a matrix-vector product's partial sums: one load and store of the sums per 4 rows.
GEMV_ROWS = 4


def cores_of(target) -> int:
    """The target's num-cores (0 if it names none): the split must match how the kernel before it
    divided the channels between the threads."""
    return int(target.attrs.get("num-cores", 0) or 0)


class SplitReduction(Rule):
    """A 1x1 conv over blocked channels whose weights outweigh its input and whose input is at least
    MIN_INPUT_OVER_OUTPUT times its output: its input channels split between `parts` threads. A
    matrix-vector product whose weights dominate: its weight rows split between them."""

    def __init__(self, parts: int):
        self.parts = parts

    def schedule(self, sch, spec) -> bool:
        gemv = gemv_shape(sch)
        if gemv is not None:
            if not gemv_fits(gemv, self.parts):
                return False
            _split_gemv(sch, gemv, self.parts, spec)
            return True
        shape = conv_shape(sch)
        if shape is None or shape["lanes"] != spec.lanes or not fits(shape, self.parts):
            return False  # (lanes: channel-blocked activations only; NCHW ones tile otherwise)
        _split(sch, shape, self.parts, spec)
        return True


def _single_reduction(sch):
    """(block, statement, iter vars) of the kernel's one reduction, if it comes first and has one loop per
    axis (the form LegalizeOps emits); else None."""
    blocks = root_blocks(sch)
    reductions = [b for b in blocks if is_reduction(sch, b)]
    if len(reductions) != 1 or blocks.index(reductions[0]) != 0:
        return None  # nothing may come before it (a pad: no 1x1 conv)
    main = reductions[0]
    stmt = sch.get(main)
    ivs = list(stmt.iter_vars)
    loops = sch.get_loops(main)
    if len(loops) != len(ivs) or any(loop_extent(sch, lp) != int(iv.dom.extent) for lp, iv in zip(loops, ivs)):
        return None
    return main, stmt, ivs


def conv_shape(sch):
    """The kernel's single reduction as a dict of what the rule needs, or None if it is no 1x1 conv of the
    form LegalizeOps emits (one loop per axis; the reduction's inner axes of extent 1 but the lanes)."""
    if (found := _single_reduction(sch)) is None:
        return None
    main, stmt, ivs = found
    reduce = [i for i, iv in enumerate(ivs) if int(iv.iter_type) == REDUCE]
    spatial = [i for i, iv in enumerate(ivs) if int(iv.iter_type) != REDUCE]
    if reduce != list(range(reduce[0], len(ivs))) or len(stmt.reads) != 2:
        return None  # spatial loops outside, the reduction inside; an input and a weight
    if any(int(ivs[i].dom.extent) != 1 for i in reduce[1:-1]):
        return None  # a kernel window (ry, rx) of 1x1
    write = stmt.writes[0]
    if str(write.source.dtype) != "float32":
        return None  # fp16 sums in another order are another rounding: measured and judged for fp32 only
    if len(write.region) != len(spatial) or not all(write.region[d].min.same_as(ivs[i].var)
                                                    for d, i in enumerate(spatial)):
        return None
    # The weight is the read the output's pixels do not move; the input the one they do.
    pixel = spatial[-2]  # the output's innermost pixel axis ([N, C/b, H, W, b]: W)
    moved = [any(uses(rg.min, ivs[pixel].var) for rg in r.region) for r in stmt.reads]
    if sorted(moved) != [False, True]:
        return None
    inp, weight = (stmt.reads[k] for k in ((0, 1) if moved[0] else (1, 0)))
    channels = [i for i in spatial[:-1] if any(uses(rg.min, ivs[i].var) for rg in weight.region)]
    if len(channels) != 1:
        return None
    return {"main": main, "spatial": spatial, "rc": reduce[0], "channel": channels[0], "pixel": pixel,
            "in_bytes": buffer_bytes(inp), "weight_bytes": buffer_bytes(weight), "out_bytes": buffer_bytes(write),
            "rc_extent": int(ivs[reduce[0]].dom.extent), "pixels": int(ivs[pixel].dom.extent),
            "channel_blocks": int(ivs[channels[0]].dom.extent), "lanes": int(ivs[spatial[-1]].dom.extent)}


def fits(shape: dict, parts: int) -> bool:
    """Weights over input: the default tile splits output channels, so each core reads all the input.
    Input at least MIN_INPUT_OVER_OUTPUT x the output: the partial sums stay cheap."""
    return (parts > 1 and shape["rc_extent"] % parts == 0 and shape["weight_bytes"] > shape["in_bytes"]
            and shape["in_bytes"] >= MIN_INPUT_OVER_OUTPUT * shape["out_bytes"])


def gemv_shape(sch):
    """A [1, K] x [K, N] product (the classifier), weight rows contiguous in N, as a dict; else None."""
    if (found := _single_reduction(sch)) is None:
        return None
    main, stmt, ivs = found
    if [int(iv.iter_type) == REDUCE for iv in ivs] != [False, False, True] or int(ivs[0].dom.extent) != 1:
        return None
    write = stmt.writes[0]
    if str(write.source.dtype) != "float32" or len(stmt.reads) != 2:
        return None  # fp16 sums in another order are another rounding: measured and judged for fp32 only
    n, k = ivs[1].var, ivs[2].var
    weight = [r for r in stmt.reads if uses(r.region[-1].min, n) and any(uses(rg.min, k) for rg in r.region[:-1])]
    if len(weight) != 1:
        return None
    return {"main": main, "n": int(ivs[1].dom.extent), "k": int(ivs[2].dom.extent),
            "weight_bytes": buffer_bytes(weight[0]), "out_bytes": buffer_bytes(write)}


def gemv_fits(shape: dict, parts: int) -> bool:
    """The rows divide between the cores, and the weights dwarf the partial output rows."""
    return (parts > 1 and shape["k"] % parts == 0
            and shape["weight_bytes"] >= MIN_WEIGHTS_OVER_PARTIALS * parts * shape["out_bytes"])


def _split_gemv(sch, shape, parts, spec) -> None:
    main = shape["main"]
    k = sch.get_loops(main)[2]
    k0, _ = sch.split(k, [parts, None])
    partial = sch.rfactor(k0, factor_axis=0)

    # Thread t sums rows [t * K/parts, (t + 1) * K/parts) into its own output row, GEMV_ROWS rows at a time
    # across the whole row: the weights are read front to back.
    vec = vector_factor(shape["n"], spec.lanes)
    p_i0, p_n, p_k0, p_k1 = sch.get_loops(partial)
    rows_out, rows_in = sch.split(p_k1, [None, divisor(shape["k"] // parts, GEMV_ROWS)])
    n_out, n_in = sch.split(p_n, [None, vec])
    sch.reorder(p_k0, p_i0, rows_out, n_out, rows_in, n_in)
    sch.parallel(p_k0)
    sch.unroll(rows_in)
    sch.vectorize(n_in)
    sch.decompose_reduction(partial, rows_out)

    # The partial rows summed with the epilogue (a few thousand adds: one thread).
    f_i0, f_n, f_k0 = sch.get_loops(main)
    f_out, f_in = sch.split(f_n, [None, vec])
    sch.reorder(f_i0, f_out, f_k0, f_in)
    sch.vectorize(f_in)
    _epilogue_at(sch, main, f_out)
    sch.decompose_reduction(main, f_k0)


def _epilogue_at(sch, main, loop) -> None:
    """The blocks after `main` (bias, residual) inlined into the last one, which runs vectorized at `loop`."""
    root = root_blocks(sch)
    tail = root[1 + next(k for k, b in enumerate(root) if sch.get(b).same_as(sch.get(main))):]
    for b in tail[:-1]:
        sch.compute_inline(b)
    if tail:
        sch.reverse_compute_at(tail[-1], loop)
        sch.vectorize(sch.get_loops(tail[-1])[-1])


def _register_tile(shape, spec) -> tuple[int, int]:
    """(output-channel blocks, pixels) per register tile: the most accumulators within the budget,
    as TiledReduction does."""
    budget = min(spec.accumulators, MAX_ACCUMULATORS)
    best = (0, 1, 1)
    for blocks in (2, 1):
        if shape["channel_blocks"] % blocks:
            continue
        px = divisor(shape["pixels"], budget // blocks)
        best = max(best, (blocks * px, blocks, px))
    return best[1], best[2]


def _split(sch, shape, parts, spec) -> None:
    main, spatial, rc = shape["main"], shape["spatial"], shape["rc"]
    loops = sch.get_loops(main)
    rc0, _ = sch.split(loops[rc], [parts, None])
    partial = sch.rfactor(rc0, factor_axis=0)

    # The partial sums: the loops as before with rc0 among them; rc0 outermost and parallel, so that
    # thread t sums the t-th share of the input channels (the share the kernel before gave it).
    ploops = sch.get_loops(partial)
    at = {i: ploops[i] for i in spatial}
    p_rc0, reduce = ploops[rc], ploops[rc + 1:]
    blocks, pixels = _register_tile(shape, spec)
    c_out, c_in = sch.split(at[shape["channel"]], [None, blocks])
    x_out, x_in = sch.split(at[shape["pixel"]], [None, pixels])
    outer = [c_out if i == shape["channel"] else x_out if i == shape["pixel"] else at[i] for i in spatial[:-1]]
    lanes = at[spatial[-1]]
    sch.reorder(p_rc0, *outer, *reduce, c_in, x_in, lanes)
    sch.parallel(p_rc0)
    sch.unroll(c_in)
    sch.unroll(x_in)
    sch.vectorize(lanes)
    sch.decompose_reduction(partial, reduce[0])

    # The sum of the partials, and the epilogue on it while it is in registers: threads over output-channel
    # blocks and rows.
    floops = sch.get_loops(main)
    *fspatial, f_parts = floops
    sch.reorder(*fspatial[:-1], f_parts, fspatial[-1])
    rows = sch.fuse(*fspatial[:-2]) if len(fspatial) > 3 else fspatial[0]
    sch.parallel(rows)
    sch.vectorize(fspatial[-1])
    _epilogue_at(sch, main, fspatial[-2])
    sch.decompose_reduction(main, f_parts)


def split_reduction_pass(target):
    """The module pass (run before the tuning records): every kernel the rule fits, scheduled and marked."""
    import tvm
    from tvm import tirx

    from c2f_edge.backend.targets import as_target

    target = as_target(target)
    rule = SplitReduction(cores_of(target))

    @tvm.transform.module_pass(opt_level=0, name="c2f_edge_split_reduction")
    def _pass(mod, _ctx):
        if rule.parts < 2:
            return mod
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc) or (func.attrs is not None and func.attrs.get("tirx.is_scheduled")):
                continue
            sch = rule.apply(func, target, False)
            if sch is not None:
                mod[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr(ATTR, True)
        return mod

    return _pass
