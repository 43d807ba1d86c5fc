"""The one-kernel channels-first LayerNorm in NCHW (backend/legalize/layer_norm.py)."""

from __future__ import annotations

from c2f_edge.backend.schedules.base import SCRATCH, Rule, loop_extent, root_blocks, vector_factor


class ChannelNorm(Rule):
    """The one-kernel channels-first LayerNorm (legalize/layer_norm.py): parallel over pixel rows; for each
    vector of pixels, both channel reductions accumulate in registers, then the channels are normalized."""

    def schedule(self, sch, spec) -> bool:
        from c2f_edge.backend.legalize.layer_norm import NORM_BLOCK, SQDEV_BLOCK, SUM_BLOCK

        blocks = root_blocks(sch)
        if [sch.get(b).name_hint for b in blocks] != [SUM_BLOCK, SQDEV_BLOCK, NORM_BLOCK]:
            return False
        total, sqdev, norm = blocks
        n, k, i, j = sch.get_loops(norm)
        j0, j1 = sch.split(j, factors=[None, vector_factor(loop_extent(sch, j), spec.lanes)])
        sch.reorder(n, i, j0, k, j1)
        sch.parallel(sch.fuse(n, i))
        sch.vectorize(j1)
        for block in (sqdev, total):
            sch.compute_at(block, j0, preserve_unit_loops=True)
        for block in (total, sqdev):
            sch.set_scope(block, 0, SCRATCH)
            *_, lane, red = sch.get_loops(block)
            sch.reorder(red, lane)
            sch.vectorize(lane)  # before decompose_reduction: vectorize refuses a loop under an init-less update
            init = sch.decompose_reduction(block, red)
            sch.vectorize(sch.get_loops(init)[-1])
        return True
