"""The LayerNorm of channel-blocked activations (backend/passes/block_channels.py)."""

from __future__ import annotations

from c2f_edge.backend.schedules.base import SCRATCH, Rule, root_blocks


class BlockedNorm(Rule):
    """The LayerNorm of blocked activations (passes/block_channels.py): parallel over pixel rows; for each
    pixel, the sums over the channel blocks accumulate in one register, then across its lanes."""

    def schedule(self, sch, spec) -> bool:
        from c2f_edge.backend.passes.block_channels import NORM_BLOCKS

        blocks = root_blocks(sch)
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
            sch.set_scope(block, 0, SCRATCH)
            *_, lane, red = sch.get_loops(block)
            sch.reorder(red, lane)
            sch.vectorize(lane)
            init = sch.decompose_reduction(block, red)
            sch.vectorize(sch.get_loops(init)[-1])
        return True
