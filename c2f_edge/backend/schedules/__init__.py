"""Default CPU schedules: what an llvm build runs for every kernel that no tuning record covers.

Untuned Relax code is one thread, scalar, with the reductions walking memory in the worst order
(seconds per image). These rules give each fused kernel the schedule a person would write first:

- conv-like kernels (1x1, depthwise, strided, the head's matmul): an outer loop over output tiles,
  run in parallel; inside it a register tile (an unrolled output axis times a vectorized innermost
  axis) accumulated in a local buffer across the whole reduction, then the fused epilogue (bias,
  GELU, residual, ...) computed on that tile while it is still in registers;
- reductions over a strided axis (the channel mean of the channels-first LayerNorm): the same
  shape, vectorized across pixels;
- everything else: parallel over the outer loops, vectorized over the innermost.

Tile sizes come from the target: vector lanes (NEON 4, AVX2 8, AVX-512 16) and register count
(16 or 32) bound the register tile. They stay in plain NCHW: the innermost axis of every big
tensor is the pixel row, contiguous, so no layout transform (and no copy) is needed.

Rules follow dlight's ScheduleRule protocol, so `ApplyDefaultSchedule` leaves alone every
function a tuning record already scheduled: a record always wins.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from tvm.s_tir.dlight.base import ScheduleRule  # this module is imported only when building

log = logging.getLogger(__name__)

_REDUCE = 2  # tirx.IterVar.CommReduce
# More accumulators than this in one register tile ran slower on AVX-512 (LLVM spills): the blocked
# 1x1 convs with 28 took 0.99 ms against 0.37 ms with 16 (stage 2, 14x14).
MAX_ACCUMULATORS = 16


@dataclass(frozen=True)
class CpuSpec:
    """What the schedules need to know about a CPU target."""

    lanes: int  # float32 lanes per vector register
    registers: int  # vector registers

    @property
    def accumulators(self) -> int:
        """Vector registers a register tile may use (the rest hold operands)."""
        return self.registers - 4


def cpu_spec(target) -> CpuSpec:
    from tvm.target import codegen

    def has(feature):
        try:
            return bool(codegen.target_has_features(feature, target))
        except Exception:  # noqa: BLE001 - an unknown feature name on this arch
            return False

    triple = str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
    if has("avx512f"):
        return CpuSpec(lanes=16, registers=32)
    if has("avx2") or has("avx"):
        return CpuSpec(lanes=8, registers=16)
    if triple.startswith(("aarch64", "arm64")):
        return CpuSpec(lanes=4, registers=32)
    return CpuSpec(lanes=4, registers=16)  # armv7 NEON (16 q registers), SSE


def rules():
    return [ChannelNorm(), BlockedNorm(), TiledReduction(), Elementwise()]


def default_schedule():
    """The pass: apply the CPU rules to every PrimFunc not already scheduled (by a tuning record)."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(*rules())


def schedule_func(func, target):
    """The default schedule of one PrimFunc (an s_tir.Schedule with its trace), or None if no rule fits.

    The tuner measures it as one more candidate, so a tuned build is never slower than the default.
    """
    for rule in rules():
        sch = rule.apply(func, target, False)
        if sch is not None:
            return sch
    return None


class _Rule(ScheduleRule):
    def apply(self, func, target, tunable):
        from tvm import s_tir, tirx

        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        try:
            return sch if self.schedule(sch, cpu_spec(target)) else None
        except Exception as e:  # noqa: BLE001 - a kernel outside what the rule knows: the next rule's
            log.debug("%s skipped %s: %s", type(self).__name__, func.attrs.get("global_symbol", "?"), e)
            return None


class TiledReduction(_Rule):
    """Kernels with exactly one reduction block: convolutions, matmuls, means."""

    def schedule(self, sch, spec) -> bool:
        blocks = _root_blocks(sch)
        reductions = [b for b in blocks if _is_reduction(sch, b)]
        if len(reductions) != 1:
            return False
        main = reductions[0]
        before, after = blocks[: blocks.index(main)], blocks[blocks.index(main) + 1:]
        padded = []
        for b in before:
            if _has_if_then_else(sch, b):
                padded.append(b)  # a real pad: inlined it would put a branch in the inner loop
            else:
                sch.compute_inline(b)
        for b in after[:-1]:
            sch.compute_inline(b)  # one epilogue block remains (or none)
        epilogue = after[-1] if after else None

        tile = _tile_reduction(sch, main, spec)
        if tile is None:
            return False
        writeback = sch.cache_write(main, 0, "local")
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
            _parallel_vectorize(sch, b, spec, vectorize=False)
        return True


class ChannelNorm(_Rule):
    """The one-kernel channels-first LayerNorm (c2f_edge.cpu_norm): parallel over pixel rows; for each
    vector of pixels, both channel reductions accumulate in registers, then the channels are normalized."""

    def schedule(self, sch, spec) -> bool:
        from c2f_edge.backend.passes.fuse_channel_norm import NORM_BLOCK, SQDEV_BLOCK, SUM_BLOCK

        blocks = _root_blocks(sch)
        if [sch.get(b).name_hint for b in blocks] != [SUM_BLOCK, SQDEV_BLOCK, NORM_BLOCK]:
            return False
        total, sqdev, norm = blocks
        n, k, i, j = sch.get_loops(norm)
        j0, j1 = sch.split(j, factors=[None, _vector_factor(_extent(sch, j), spec.lanes)])
        sch.reorder(n, i, j0, k, j1)
        sch.parallel(sch.fuse(n, i))
        sch.vectorize(j1)
        for block in (sqdev, total):
            sch.compute_at(block, j0, preserve_unit_loops=True)
        for block in (total, sqdev):
            sch.set_scope(block, 0, "local")
            *_, lane, red = sch.get_loops(block)
            sch.reorder(red, lane)
            sch.vectorize(lane)  # before decompose_reduction: vectorize refuses a loop under an init-less update
            init = sch.decompose_reduction(block, red)
            sch.vectorize(sch.get_loops(init)[-1])
        return True


class BlockedNorm(_Rule):
    """The LayerNorm of blocked activations (c2f_edge.cpu_blocked): parallel over pixel rows; for each
    pixel, the sums over the channel blocks accumulate in one register, then across its lanes."""

    def schedule(self, sch, spec) -> bool:
        from c2f_edge.backend.passes.block_channels import NORM_BLOCKS

        blocks = _root_blocks(sch)
        if tuple(sch.get(b).name_hint for b in blocks) != NORM_BLOCKS:
            return False
        part, total, sqdev, var, norm = blocks
        n, c, i, j, k = sch.get_loops(norm)
        sch.reorder(n, i, j, c, k)
        sch.parallel(sch.fuse(n, i))
        sch.vectorize(k)
        for block in (var, sqdev, total, part):
            sch.compute_at(block, j, preserve_unit_loops=True)
        for block in (part, sqdev):
            sch.set_scope(block, 0, "local")
            *_, lane, red = sch.get_loops(block)
            sch.reorder(red, lane)
            sch.vectorize(lane)
            init = sch.decompose_reduction(block, red)
            sch.vectorize(sch.get_loops(init)[-1])
        return True


class Elementwise(_Rule):
    """Kernels with spatial blocks only (and the fallback for anything TiledReduction declined)."""

    def schedule(self, sch, spec) -> bool:
        blocks = _root_blocks(sch)
        if any(_is_reduction(sch, b) for b in blocks):
            for b in blocks:  # declined reductions still get threads, at least
                _parallel_vectorize(sch, b, spec, vectorize=not _is_reduction(sch, b))
            return True
        for b in blocks[:-1]:
            if _inlinable(sch, b):
                sch.compute_inline(b)
        for b in _root_blocks(sch):
            _parallel_vectorize(sch, b, spec, vectorize=not _has_if_then_else(sch, b))
        return True


# -- helpers ---------------------------------------------------------------------------------------

def _inlinable(sch, block) -> bool:
    """An intermediate (not an output) with a single consumer, so inlining it duplicates no work."""
    stmt = sch.get(block)
    if any(sch.get(b).same_as(stmt) for b in sch.get_output_blocks(sch.get_sblock("root"))):
        return False
    return len(sch.get_consumers(block)) == 1


def _root_blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _is_reduction(sch, block) -> bool:
    return any(int(iv.iter_type) == _REDUCE for iv in sch.get(block).iter_vars)


def _has_if_then_else(sch, block) -> bool:
    """A pad block: its store's value is an if_then_else (the only branching form LegalizeOps emits)."""
    value = getattr(sch.get(block).body, "value", None)
    return "if_then_else" in str(getattr(getattr(value, "op", None), "name", ""))


def _bytes(region) -> int:
    """Size of the whole buffer a read region belongs to."""
    n = max(1, region.source.dtype.bits // 8)
    for d in region.source.shape:
        n *= int(d)
    return n


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def _uses(expr, var) -> bool:
    from tvm.tirx.analysis import undefined_vars

    return any(v.same_as(var) for v in undefined_vars(expr))


def _divisor(extent: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(extent, limit)) + 1) if extent % d == 0)


def _vector_factor(extent: int, lanes: int) -> int:
    """A divisor of `extent` for the vectorized axis, the one with the most lanes per machine op.

    LLVM splits a vector into power-of-two pieces (a 14-lane row is 8 + 4 + 2 ops). On AVX-512 a
    vector longer than a register but not a whole number of them is never picked: 28-lane rows of
    the 11x11 depthwise conv ran 17x slower than 8-lane ones (measured on a Xeon, 2 threads).
    """
    best = (0.0, 0)
    for d in range(1, min(extent, 2 * lanes) + 1):
        if extent % d or (d > lanes >= 16 and d % lanes):
            continue
        pieces = d // lanes + (d % lanes).bit_count()
        best = max(best, (d / pieces, d))
    return best[1]


def _unit_stride(expr, var, lanes: int = 1) -> bool:
    """expr is `var` plus terms free of it (so consecutive var values are consecutive addresses),
    or `var % P` of a packed layout whose blocks P hold whole vectors."""
    from tvm import tirx

    if isinstance(expr, tirx.Var):
        return expr.same_as(var)
    if isinstance(expr, tirx.FloorMod) and isinstance(expr.b, tirx.IntImm):
        return isinstance(expr.a, tirx.Var) and expr.a.same_as(var) and int(expr.b) % lanes == 0
    if isinstance(expr, tirx.Add):
        a, b = _uses(expr.a, var), _uses(expr.b, var)
        return (a != b) and _unit_stride(expr.a if a else expr.b, var, lanes)
    return False


@dataclass
class Tile:
    outer: object  # the fused, parallel loop over output tiles
    vec_dim: int  # which output dimension the register tile vectorizes


def _tile_reduction(sch, block, spec):
    """Split and reorder the reduction block's loops into outer tiles x reduction x register tile."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    ivs = list(stmt.iter_vars)
    if len(loops) != len(ivs) or any(_extent(sch, lp) != int(iv.dom.extent) for lp, iv in zip(loops, ivs)):
        return None  # not the plain one-loop-per-axis form LegalizeOps emits
    spatial = [i for i, iv in enumerate(ivs) if int(iv.iter_type) != _REDUCE]
    reduce = [i for i, iv in enumerate(ivs) if int(iv.iter_type) == _REDUCE]
    live = [i for i in spatial if int(ivs[i].dom.extent) > 1]
    if not live:
        return None
    write = stmt.writes[0]
    out_dim = {}
    for d, rg in enumerate(write.region):
        for i in spatial:
            if rg.min.same_as(ivs[i].var):
                out_dim[i] = d
    reads = [r for r in stmt.reads if not r.source.same_as(write.source)]

    def indexed_by(i):
        return [k for k, r in enumerate(reads) if any(_uses(rg.min, ivs[i].var) for rg in r.region)]

    def contiguous(i):  # every read that moves with axis i moves along its last dimension, unit stride
        return all(_unit_stride(reads[k].region[-1].min, ivs[i].var, spec.lanes) for k in indexed_by(i))

    def last_dim_of_read(i):
        return any(_uses(reads[k].region[-1].min, ivs[i].var) for k in indexed_by(i))

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
        v = _vector_factor(int(ivs[vec].dom.extent), spec.lanes)
    else:
        return None
    regs = -(-v // spec.lanes)

    # Where some operand is a broadcast (not indexed by the vector axis), an axis that moves only the
    # vector operands gives a second vector that meets the same broadcasts: the output-channel blocks of
    # a blocked conv (1.15-1.2x on its 1x1 convs on AVX-512; 4 vectors were slower than 2).
    vector_operands = set(indexed_by(vec))
    second_vector = set()
    if len(vector_operands) < len(reads):
        second_vector = {i for i in live if i != vec and i in out_dim and set(indexed_by(i)) <= vector_operands}

    def register_tile(nv):
        """Factors of the axes whose tile reuses a loaded operand (one read ignores them), innermost first."""
        budget = max(1, min(spec.accumulators, MAX_ACCUMULATORS) // (nv * regs))
        factors = {}
        innermost_first = [i for i in live if i != vec][::-1]
        for i in sorted(innermost_first, key=lambda i: i not in second_vector):
            if i not in out_dim or len(indexed_by(i)) == len(reads) or budget < 2:
                continue
            f = _divisor(int(ivs[i].dom.extent), min(2 if i in second_vector else 8, budget))
            if f > 1:
                factors[i] = f
                budget //= f
        return factors, nv * regs * math.prod(factors.values())

    # A packed weight's output channels take two vectors: each loaded weight vector then meets the same
    # broadcasts twice (1.1-1.3x on the 1x1 convs, AVX2 and AVX-512) -- unless the pixels then tile
    # badly (7-pixel rows on AVX2: 2 accumulators, 2.5x slower). More than 16 accumulators in all ran
    # slower on AVX-512: LLVM spills.
    factors, single = register_tile(1)
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
    vec_bytes = sum(_bytes(reads[k]) for k in vector_operands)
    other_bytes = sum(_bytes(r) for k, r in enumerate(reads) if k not in vector_operands)
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
    return Tile(outer=fused, vec_dim=out_dim[vec])


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
    n = _extent(sch, last)
    if n > 4 * spec.lanes:
        _, last = sch.split(last, factors=[None, _vector_factor(n, spec.lanes)])
    sch.vectorize(last)
    for lp in loops[:-1]:
        if _extent(sch, lp) <= 8:
            sch.unroll(lp)


def _parallel_vectorize(sch, block, spec, vectorize: bool) -> None:
    """Parallel over all but the innermost loop, the innermost vectorized in lane-sized pieces."""
    loops = sch.get_loops(block)
    if not loops:
        return
    if _is_reduction(sch, block):  # threads over the leading spatial loops only
        ivs = sch.get(block).iter_vars
        lead = []
        for lp, iv in zip(loops, ivs):
            if int(iv.iter_type) == _REDUCE:
                break
            lead.append(lp)
        if lead and len(loops) == len(ivs):
            sch.parallel(sch.fuse(*lead) if len(lead) > 1 else lead[0])
        return
    if len(loops) == 1:
        sch.parallel(loops[0])
        return
    inner = loops[-1]
    outer = sch.fuse(*loops[:-1])
    sch.parallel(outer)
    if vectorize:
        n = _extent(sch, inner)
        if n > 2 * spec.lanes:
            _, inner = sch.split(inner, factors=[None, _vector_factor(n, spec.lanes)])
        sch.vectorize(inner)
