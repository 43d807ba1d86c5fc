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

Tile sizes come from the target (cpu_spec.py): vector lanes (NEON 4, AVX2 8, AVX-512 16) and
register count (16 or 32) bound the register tile. The kernels they see work on channel-blocked
activations, [N, C/b, H, W, b] with b = the vector lanes (passes/block_channels.py), or on NCHW with
prepacked weights where channels are no multiple of b (legalize/conv2d_packed.py).

One rule per file; `rules()` below is the order they are tried in. They follow dlight's ScheduleRule protocol, so `ApplyDefaultSchedule` leaves alone every
function a tuning record already scheduled: a record always wins.
"""

from __future__ import annotations

from c2f_edge.backend.schedules.blocked_norm import BlockedNorm
from c2f_edge.backend.schedules.channel_norm import ChannelNorm
from c2f_edge.backend.schedules.cpu_spec import CpuSpec, cpu_spec
from c2f_edge.backend.schedules.elementwise import Elementwise
from c2f_edge.backend.schedules.tiled_reduction import TiledReduction

__all__ = ["BlockedNorm", "ChannelNorm", "CpuSpec", "Elementwise", "TiledReduction", "cpu_spec", "default_schedule",
           "rules", "schedule_func"]


def rules():
    """The rules in the order they are tried: the first that schedules a kernel wins."""
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
