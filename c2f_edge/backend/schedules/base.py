"""The rule protocol and the helpers every CPU rule uses."""

from __future__ import annotations

import logging

from tvm.s_tir.dlight.base import ScheduleRule  # imported only when building

from c2f_edge.backend.schedules.cpu_spec import cpu_spec

log = logging.getLogger(__name__)

REDUCE = 2  # tirx.IterVar.CommReduce

# The scope of per-tile scratch buffers (accumulators, a pixel's sums). TVM 0.27 lowers every "local"
# buffer on a CPU to a TVMBackendAllocWorkspace/Free call pair, run once per parallel iteration (259k pairs,
# 7.8% of an inference's instructions on the A76); a "global" one under 1 KiB becomes a stack array that
# LLVM keeps in registers.
SCRATCH = "global"


class Rule(ScheduleRule):
    """A dlight rule for llvm targets: `schedule(sch, spec)` returns True when it scheduled the kernel."""

    def apply(self, func, target, tunable):
        from tvm import s_tir, tirx

        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        try:
            return sch if self.schedule(sch, cpu_spec(target, kernel_dtype(sch))) else None
        except Exception as e:  # noqa: BLE001 - a kernel outside what the rule knows: the next rule's
            log.debug("%s skipped %s: %s", type(self).__name__, func.attrs.get("global_symbol", "?"), e)
            return None


def kernel_dtype(sch) -> str:
    """The dtype a kernel's vectors hold: its output's (an fp16 kernel fills NEON registers with 8 lanes)."""
    for block in sch.get_output_blocks(sch.get_sblock("root")):
        dtype = str(sch.get(block).writes[0].source.dtype)
        if dtype.startswith("float"):
            return dtype
    return "float32"


def root_blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def is_reduction(sch, block) -> bool:
    return any(int(iv.iter_type) == REDUCE for iv in sch.get(block).iter_vars)


def has_if_then_else(sch, block) -> bool:
    """A pad block: its store's value is an if_then_else (the only branching form LegalizeOps emits)."""
    value = getattr(sch.get(block).body, "value", None)
    return "if_then_else" in str(getattr(getattr(value, "op", None), "name", ""))


def loop_extent(sch, loop) -> int:
    return int(sch.get(loop).extent)


def vector_factor(extent: int, lanes: int) -> int:
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


# Work items the threads of a pad share: enough for any board's cores, few enough to keep the inner
# loops nested.
PAD_PARALLEL_ITEMS = 64


def parallel_pad(sch, block) -> None:
    """A pad block: threads over just enough leading loops, the others nested. With every loop but the
    innermost fused, each 16-byte vector's indices were a division and a modulo by the padded extents:
    about 25 integer instructions per vector copied, most of an 11x11 kernel's integer work on the A76."""
    loops = sch.get_loops(block)
    if not loops:
        return
    k, items = 0, 1
    while k < len(loops) - 1 and items < PAD_PARALLEL_ITEMS:
        items *= loop_extent(sch, loops[k])
        k += 1
    sch.parallel(sch.fuse(*loops[:k]) if k > 1 else loops[0])


def parallel_vectorize(sch, block, spec) -> None:
    """Parallel over all but the innermost loop, the innermost vectorized in lane-sized pieces (a reduction:
    threads over its leading spatial loops only; a pad: see parallel_pad)."""
    loops = sch.get_loops(block)
    if not loops:
        return
    if is_reduction(sch, block):  # threads over the leading spatial loops only
        ivs = sch.get(block).iter_vars
        lead = []
        for lp, iv in zip(loops, ivs):
            if int(iv.iter_type) == REDUCE:
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
    n = loop_extent(sch, inner)
    if n > 2 * spec.lanes:
        _, inner = sch.split(inner, factors=[None, vector_factor(n, spec.lanes)])
    sch.vectorize(inner)


def buffer_bytes(region) -> int:
    """Size of the whole buffer a read region belongs to."""
    n = max(1, region.source.dtype.bits // 8)
    for d in region.source.shape:
        n *= int(d)
    return n


def uses(expr, var) -> bool:
    """expr reads var."""
    from tvm.tirx.analysis import undefined_vars

    return any(v.same_as(var) for v in undefined_vars(expr))


def divisor(extent: int, limit: int) -> int:
    """The largest divisor of extent that is at most limit (at least 1)."""
    return max(d for d in range(1, max(1, min(extent, limit)) + 1) if extent % d == 0)
