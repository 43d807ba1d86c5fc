"""Kernels with exactly one reduction block (convolutions, matmuls, means): output tiles in parallel,
a register tile accumulated over the whole reduction, the fused epilogue applied while it is in
registers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from c2f_edge.backend.schedules.base import (
    REDUCE,
    SCRATCH,
    Rule,
    buffer_bytes,
    divisor,
    has_if_then_else,
    is_reduction,
    loop_extent,
    parallel_pad,
    root_blocks,
    uses,
    vector_factor,
)
from c2f_edge.backend.schedules.cpu_spec import MAX_ACCUMULATORS


class TiledReduction(Rule):
    """Kernels with exactly one reduction block: convolutions, matmuls, means."""

    def schedule(self, sch, spec) -> bool:
        blocks = root_blocks(sch)
        reductions = [b for b in blocks if is_reduction(sch, b)]
        if len(reductions) != 1:
            return False
        main = reductions[0]
        before, after = blocks[: blocks.index(main)], blocks[blocks.index(main) + 1:]
        padded = []
        for b in before:
            if has_if_then_else(sch, b):
                padded.append(b)  # a real pad: inlined it would put a branch in the inner loop
            else:
                sch.compute_inline(b)
        for b in after[:-1]:
            sch.compute_inline(b)  # one epilogue block remains (or none)
        epilogue = after[-1] if after else None

        tile = _tile_reduction(sch, main, spec)
        if tile is None:
            return False
        broadcast = [sch.get(main).reads[i].source for i in tile.broadcast]
        _stage_broadcast_runs(sch, main, tile)
        writeback = sch.cache_write(main, 0, SCRATCH)
        rank = len(sch.get(main).writes[0].region)
        if tile.vec_dim != rank - 1:  # accumulators contiguous along the vector axis, or no registers
            keep = [d for d in range(rank) if d != tile.vec_dim] + [tile.vec_dim]
            sch.transform_layout(main, ("write", 0), lambda *idx: [idx[d] for d in keep])
        if epilogue is not None:
            sch.compute_inline(writeback)
            tail = epilogue
        else:
            tail = writeback
        sch.reverse_compute_at(tail, tile.outer, preserve_unit_loops=True)
        _vectorize_tail(sch, tail, spec, tile.vec_dim)
        init = sch.decompose_reduction(main, sch.get_loops(main)[1])
        _vectorize_tail(sch, init, spec, len(sch.get_loops(init)) - 2)
        for b in padded:
            if not _pad_per_tile(sch, b, tile, spec, broadcast):
                parallel_pad(sch, b)
        return True


@dataclass
class Tile:
    outer: object  # the fused, parallel loop over output tiles
    vec_dim: int  # which output dimension the register tile vectorizes
    reduce_inner: object = None  # the innermost reduction loop (outside the register tile)
    broadcast: tuple = ()  # indices (in the block's reads) of the operands the vector axis does not move


def _tile_reduction(sch, block, spec):
    """Split and reorder the reduction block's loops into outer tiles x reduction x register tile."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    ivs = list(stmt.iter_vars)
    if len(loops) != len(ivs) or any(loop_extent(sch, lp) != int(iv.dom.extent) for lp, iv in zip(loops, ivs)):
        return None  # not the plain one-loop-per-axis form LegalizeOps emits
    spatial = [i for i, iv in enumerate(ivs) if int(iv.iter_type) != REDUCE]
    reduce = [i for i, iv in enumerate(ivs) if int(iv.iter_type) == REDUCE]
    live = [i for i in spatial if int(ivs[i].dom.extent) > 1]
    if not live:
        return None
    write = stmt.writes[0]
    out_dim = {}
    for d, rg in enumerate(write.region):
        for i in spatial:
            if rg.min.same_as(ivs[i].var):
                out_dim[i] = d
    read_index = [k for k, r in enumerate(stmt.reads) if not r.source.same_as(write.source)]
    reads = [stmt.reads[k] for k in read_index]

    def indexed_by(i):
        return [k for k, r in enumerate(reads) if any(uses(rg.min, ivs[i].var) for rg in r.region)]

    def contiguous(i):  # every read that moves with axis i moves along its last dimension, unit stride
        return all(_unit_stride(reads[k].region[-1].min, ivs[i].var, spec.lanes) for k in indexed_by(i))

    def last_dim_of_read(i):
        return any(uses(reads[k].region[-1].min, ivs[i].var) for k in indexed_by(i))

    # The vector axis: the contiguous dimension of an operand that fills whole registers (a prepacked
    # weight's output channel: then every operand is a plain load or a broadcast); else the output's
    # innermost axis.
    write_last = next((i for i in live if out_dim.get(i) == len(write.region) - 1), None)
    choices = [i for i in live if i in out_dim and contiguous(i)
               and (i == write_last or last_dim_of_read(i))]
    full = [i for i in choices if int(ivs[i].dom.extent) % spec.lanes == 0]
    packed = [i for i in full if i != write_last]
    if packed:
        vec, v = packed[-1], spec.lanes
    elif write_last in full:
        vec, v = write_last, spec.lanes
    elif write_last in choices:
        vec = write_last
        v = vector_factor(int(ivs[vec].dom.extent), spec.lanes)
    else:
        return None
    # Registers per accumulator vector: an fp16 conv that sums in fp32 needs two for 8 lanes.
    regs = -(-v * write.source.dtype.bits // spec.register_bits)

    # Where some operand is a broadcast (not indexed by the vector axis), an axis that moves only the
    # vector operands gives a second vector that meets the same broadcasts: the output-channel blocks of
    # a blocked conv (1.15-1.2x on its 1x1 convs on AVX-512; 4 vectors were slower than 2).
    vector_operands = set(indexed_by(vec))
    second_vector = set()
    if len(vector_operands) < len(reads):
        second_vector = {i for i in live if i != vec and i in out_dim and set(indexed_by(i)) <= vector_operands}

    # A body that reads several vectors of its vector operand (the fp16 conv's chunk of products, see
    # passes/block_channels.py) keeps them in registers across the tile: fewer accumulators, and a
    # second set of output channels only where both sets of held vectors fit in half the registers.
    held = max((math.prod(int(rg.extent) for rg in reads[k].region) for k in vector_operands), default=1)

    def register_tile(nv, blocks=True):
        """Factors of the axes whose tile reuses a loaded operand (one read ignores them), innermost first.
        blocks=False: no second set of output channels."""
        def budget_for(weights):  # accumulator tiles left once the held vectors have their registers
            return max(1, min(spec.accumulators - weights, MAX_ACCUMULATORS) // (nv * regs))

        weights = (held - 1) * nv
        budget = budget_for(weights)
        factors = {}
        innermost_first = [i for i in live if i != vec][::-1]
        for i in sorted(innermost_first, key=lambda i: i not in second_vector):
            if i not in out_dim or len(indexed_by(i)) == len(reads) or budget < 2:
                continue
            if i in second_vector and not blocks:
                continue
            if held > 1 and i in second_vector:  # a second set of output channels holds its own vectors
                if 2 * held * nv > spec.registers // 2:
                    continue
                weights += held * nv
                budget = budget_for(weights)
            f = divisor(int(ivs[i].dom.extent), min(2 if i in second_vector else 8, budget))
            if f > 1:
                factors[i] = f
                budget //= f
        return factors, nv * regs * math.prod(factors.values())

    # A packed weight's output channels take two vectors: each loaded weight vector then meets the same
    # broadcasts twice (1.1-1.3x on the 1x1 convs, AVX2 and AVX-512) -- unless the pixels then tile
    # badly (7-pixel rows on AVX2: 2 accumulators, 2.5x slower). More than 16 accumulators in all ran
    # slower on AVX-512: LLVM spills.
    factors, single = register_tile(1)
    # The second set of output channels halves what is left for the pixels: on AVX2 (12 accumulators)
    # 14- and 7-pixel rows then tile by 2 and 1, so the tile had 4 and 2 accumulators, too few to hide
    # the FMA latency (stage-4 fc2 at 29% of Zen 3's peak). Take whichever tile holds more. (Tiles that
    # hold weight vectors, fp16's, keep the choice their instruction counts were measured with.)
    if held == 1:
        without, alone = register_tile(1, blocks=False)
        if alone > single:
            factors, single = without, alone
    nv = 1
    if vec != write_last and int(ivs[vec].dom.extent) % (2 * v) == 0:
        pair_factors, pair = register_tile(2)
        if 2 * pair >= single:
            factors, nv = pair_factors, 2
    outer, inner = {}, {}
    for i in spatial:
        if i == vec and nv > 1:
            outer[i], pair, inner[i] = sch.split(loops[i], factors=[None, nv, v])
        elif i == vec:
            outer[i], inner[i] = sch.split(loops[i], factors=[None, v])
        elif i in factors:
            outer[i], inner[i] = sch.split(loops[i], factors=[None, factors[i]])
        else:
            outer[i] = loops[i]
    # Outer order: the larger operand's tile stays fixed while the inner outer loops stream the
    # smaller one past it, so the larger is read from memory once (1.2x on the 56x56 fc2 alone, 3% on
    # the whole model against doing so only past 1 MiB): the weights for late stages, the activation
    # for early ones.
    vec_bytes = sum(buffer_bytes(reads[k]) for k in vector_operands)
    other_bytes = sum(buffer_bytes(r) for k, r in enumerate(reads) if k not in vector_operands)
    first = 1 if other_bytes > vec_bytes else 0
    outer_order = sorted(spatial, key=lambda i: first if vector_operands & set(indexed_by(i)) else 1 - first)
    inner_order = [i for i in spatial if i in inner and i != vec] + [vec]
    tile = [inner[i] for i in inner_order]
    if nv > 1:
        tile.insert(0, pair)
    sch.reorder(*[outer[i] for i in outer_order], *[loops[i] for i in reduce], *tile)
    fused = sch.fuse(*[outer[i] for i in outer_order])
    sch.parallel(fused)
    for lp in tile[:-1]:
        sch.unroll(lp)
    sch.vectorize(inner[vec])
    broadcast = tuple(read_index[k] for k in range(len(reads)) if k not in vector_operands)
    return Tile(outer=fused, vec_dim=out_dim[vec], reduce_inner=loops[reduce[-1]] if reduce else None,
                broadcast=broadcast)


# The pad's patch per tile against the whole padded tensor: a depthwise 3x3 tile of 8 pixels pads
# 3 rows x 10 = 3.75x; a depthwise 11x11 one 25x, a dense 3x3 conv's (all input channels) 7x.
MAX_PAD_REDUNDANCY = 4


def _pad_per_tile(sch, pad, tile, spec, broadcast) -> bool:
    """Pad each tile's patch of the input under the tile loop, in cache, instead of writing the whole
    padded tensor and reading it back: the depthwise 3x3 + GELU kernels, bound by that traffic, ran
    1.3-1.9x faster on Zen 3 (56x56: 0.56 -> 0.35 ms). Only where the patches together cost at most
    MAX_PAD_REDUNDANCY times the padded tensor and their inner dimension is whole vectors: per tile,
    the 11x11 kernels (25x) ran 1.2-1.3x slower, and so did the stem's pad of 3 NCHW channels. Never for
    a broadcast input (a dense conv's): every block of output channels would pad it again."""
    if any(buf.same_as(sch.get(pad).writes[0].source) for buf in broadcast):
        return False
    trial = sch.copy()
    trial.compute_at(pad, tile.outer, preserve_unit_loops=True)
    loops = trial.get_loops(pad)[1:]
    if not loops or loop_extent(trial, loops[-1]) % spec.lanes:
        return False
    patch = math.prod(loop_extent(trial, lp) for lp in loops)
    total = math.prod(int(d) for d in sch.get(pad).writes[0].source.shape)
    if patch * loop_extent(sch, tile.outer) > MAX_PAD_REDUNDANCY * total:
        return False
    sch.compute_at(pad, tile.outer, preserve_unit_loops=True)
    loops = sch.get_loops(pad)[1:]
    sch.vectorize(loops[-1])
    return True


def _stage_broadcast_runs(sch, block, tile) -> None:
    """Where the body reads a contiguous run of a broadcast operand (the fp16 conv's chunk: 8 input
    channels of one pixel), copy each pixel's run into scratch under the innermost reduction loop as one
    vector. LLVM keeps it in a register and multiplies by its lanes (`fmla v.8h, v.8h, v.h[i]`) instead
    of a scalar load per value, which left the fp16 model bound by loads on the A76 (790.7 M -> 619.0 M
    instructions). No fp32 kernel reads such a run: they are unchanged."""
    if tile.reduce_inner is None:
        return
    stmt = sch.get(block)
    for i in [i for i in tile.broadcast if int(stmt.reads[i].region[-1].extent) > 1]:
        staged = sch.cache_read(block, i, SCRATCH)
        sch.compute_at(staged, tile.reduce_inner, preserve_unit_loops=True)
        loops = sch.get_loops(staged)
        at = next(k for k, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(tile.reduce_inner)))
        loops = loops[at + 1:]
        if not loops:
            continue
        sch.vectorize(loops[-1])
        for lp in loops[:-1]:
            sch.unroll(lp)


def _vectorize_tail(sch, block, spec, vec_dim: int) -> None:
    """A block placed under the tile loop: vectorize the tile's vector dimension, unroll the rest."""
    loops = sch.get_loops(block)[1:]
    if not loops:
        return
    if vec_dim < len(loops) - 1:
        order = [lp for d, lp in enumerate(loops) if d != vec_dim] + [loops[vec_dim]]
        sch.reorder(*order)
        loops = order
    last = loops[-1]
    n = loop_extent(sch, last)
    if n > 4 * spec.lanes:
        _, last = sch.split(last, factors=[None, vector_factor(n, spec.lanes)])
    sch.vectorize(last)
    for lp in loops[:-1]:
        if loop_extent(sch, lp) <= 8:
            sch.unroll(lp)


def _unit_stride(expr, var, lanes: int = 1) -> bool:
    """expr is `var` plus terms free of it (so consecutive var values are consecutive addresses),
    or `var % P` of a packed layout whose blocks P hold whole vectors."""
    from tvm import tirx

    if isinstance(expr, tirx.Var):
        return expr.same_as(var)
    if isinstance(expr, tirx.FloorMod) and isinstance(expr.b, tirx.IntImm):
        return isinstance(expr.a, tirx.Var) and expr.a.same_as(var) and int(expr.b) % lanes == 0
    if isinstance(expr, tirx.Add):
        a, b = uses(expr.a, var), uses(expr.b, var)
        return (a != b) and _unit_stride(expr.a if a else expr.b, var, lanes)
    return False
