"""Kernels with spatial blocks only, and the fallback for any kernel the other rules declined."""

from __future__ import annotations

from c2f_edge.backend.schedules.base import (
    Rule,
    has_if_then_else,
    is_reduction,
    parallel_pad,
    parallel_vectorize,
    root_blocks,
)


class Elementwise(Rule):
    """Kernels with spatial blocks only (and the fallback for anything TiledReduction declined)."""

    def schedule(self, sch, spec) -> bool:
        blocks = root_blocks(sch)
        if any(is_reduction(sch, b) for b in blocks):
            for b in blocks:  # declined reductions still get threads, at least
                parallel_vectorize(sch, b, spec)
            return True
        for b in blocks[:-1]:
            if _inlinable(sch, b):
                sch.compute_inline(b)
        for b in root_blocks(sch):
            if has_if_then_else(sch, b):
                parallel_pad(sch, b)
            else:
                parallel_vectorize(sch, b, spec)
        return True


def _inlinable(sch, block) -> bool:
    """An intermediate (not an output) with a single consumer, so inlining it duplicates no work."""
    stmt = sch.get(block)
    if any(sch.get(b).same_as(stmt) for b in sch.get_output_blocks(sch.get_sblock("root"))):
        return False
    return len(sch.get_consumers(block)) == 1
