"""Estimated cycles on a Cortex-A76 or A72 from an instruction profile (board/insn_count.py): a throughput bound.

Each basic block costs, per execution, the largest of: its instructions over the decode width, and for each
issue resource (FP/ASIMD pipes, load pipes, store pipes, branch pipe, integer pipes) the micro-ops it sends
there over the number of such pipes. Blocks are summed by their executions. That is a lower bound: it knows
nothing of caches, memory bandwidth, dependency chains (latency), branch mispredictions or several threads,
so real times read higher. `scripts/calibrate_arm.py` measures by how much against published board times.

Sources of the figures (each core's table below cites the section it comes from):
- Arm Cortex-A76 Software Optimization Guide (PJDOC-466751330-7215, v8.0), section 2.1 (pipeline: 4-wide
  decode; issue to 1 branch, 2 single-cycle + 1 multi-cycle integer, 2 FP/ASIMD (V0, V1, both 128 bits wide),
  2 load/store address (L0, L1) and 2 store data pipes) and section 3 (ASIMD FMLA, Q form: one V uop);
  LLVM's Neoverse N1 model (AArch64SchedNeoverseN1.td, same pipeline) encodes the same counts.
- Arm Cortex-A72 Software Optimization Guide (UAN 0016A), section 2.1 (3-wide decode; 1 branch, 2 integer +
  1 multi-cycle, 2 FP/ASIMD (F0, F1), 1 load (L), 1 store (S) pipe) and section 3 (a Q-form ASIMD FP op takes
  both FP pipes; a Q-form store two S uops), as in LLVM's Cortex-A57 model (AArch64SchedA57.td), which
  Debian 12's llvm-mca uses for every Arm core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from c2f_edge.board.a64 import _ID, _bits, classify
from c2f_edge.board.block_profile import Profile
from c2f_edge.core.errors import UsageError

RESOURCES = ("decode", "fp", "load", "store", "branch", "int")
BLIND_SPOTS = ("caches and memory bandwidth", "dependency latency", "branch mispredictions",
               "multi-thread scaling")


@dataclass(frozen=True)
class Core:
    name: str
    clock_ghz: float  # of the board it stands for
    board: str
    width: dict[str, int]  # uops each resource takes per cycle
    fp16: bool  # FEAT_FP16: half-precision arithmetic
    q_fp_uops: int  # FP/ASIMD uops of a 128-bit (Q-form) vector FP op
    q_store_uops: int  # store uops per 16 bytes of NEON data stored
    store_uses_load_pipe: bool  # A76: store addresses go through the load/store pipes L0/L1


CORES = {
    # A76 SWOG 2.1; the Raspberry Pi 5's BCM2712 runs it at 2.4 GHz.
    "cortex-a76": Core("cortex-a76", 2.4, "Raspberry Pi 5",
                       {"decode": 4, "fp": 2, "load": 2, "store": 2, "branch": 1, "int": 3},
                       fp16=True, q_fp_uops=1, q_store_uops=1, store_uses_load_pipe=True),
    # A72 SWOG 2.1; the Raspberry Pi 4's BCM2711 runs it at 1.8 GHz (board revision 1.4 and later).
    "cortex-a72": Core("cortex-a72", 1.8, "Raspberry Pi 4",
                       {"decode": 3, "fp": 2, "load": 1, "store": 1, "branch": 1, "int": 3},
                       fp16=False, q_fp_uops=2, q_store_uops=2, store_uses_load_pipe=False),
}
# Cores without a model of their own, and the model that stands in (stated wherever it is used).
STAND_INS = {"neoverse-n1": "cortex-a76", "cortex-a78ae": "cortex-a76", "cortex-a57": "cortex-a72"}


def core(name: str) -> Core:
    if name in CORES:
        return CORES[name]
    if name in STAND_INS:
        return CORES[STAND_INS[name]]
    raise UsageError(f"no cycle model for {name!r}", hint=f"one of {', '.join([*CORES, *STAND_INS])}")


def uops(words: np.ndarray, c: Core) -> np.ndarray:
    """Per instruction word, the uops it sends to each of RESOURCES (one column each)."""
    cls, nbytes = classify(words)
    w = np.asarray(words, np.uint32)
    q = _bits(w, 30, 30) == 1
    out = np.zeros((len(w), len(RESOURCES)), np.float64)
    out[:, 0] = 1.0
    fp16 = np.isin(cls, [_ID["fma_f16x8"], _ID["fma_f16x4"]])
    if fp16.any() and not c.fp16:
        raise UsageError(f"the code runs fp16 vector arithmetic, which the {c.name} does not have",
                         hint="count it on a core with FEAT_FP16 (cortex-a76), or build it without fp16")
    wide = np.isin(cls, [_ID["fma_f32x4"], _ID["fma_f16x8"], _ID["fma_f64x2"]]) | ((cls == _ID["neon_other"]) & q)
    narrow = np.isin(cls, [_ID["fma_f32x2"], _ID["fma_f16x4"], _ID["fp_scalar"]]) | ((cls == _ID["neon_other"]) & ~q)
    out[wide, 1] = c.q_fp_uops
    out[narrow, 1] = 1
    chunks = np.maximum(1, -(-nbytes // 16))  # 16-byte pieces of a NEON access
    load, store = np.isin(cls, [_ID["load"], _ID["neon_load"]]), np.isin(cls, [_ID["store"], _ID["neon_store"]])
    neon_load, neon_store = cls == _ID["neon_load"], cls == _ID["neon_store"]
    out[load, 2] = 1
    out[neon_load, 2] = chunks[neon_load]
    out[store, 3] = 1
    out[neon_store, 3] = chunks[neon_store] * c.q_store_uops
    if c.store_uses_load_pipe:  # the address uop of a store issues to L0/L1, like a load
        out[store, 2] = 1
        out[neon_store, 2] = chunks[neon_store]
    out[cls == _ID["branch"], 4] = 1
    out[cls == _ID["other"], 5] = 1
    return out


def resource_cycles(profile: Profile, c: Core) -> np.ndarray:
    """Per block (rows) and resource (columns): cycles one execution keeps that resource busy."""
    per_word = uops(profile.words, c)
    sizes = np.diff(profile.starts)
    sums = np.zeros((len(sizes), len(RESOURCES)))
    nonempty = sizes > 0
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(per_word, profile.starts[:-1][nonempty], axis=0)
    return sums / np.array([c.width[r] for r in RESOURCES], np.float64)


def block_cycles(profile: Profile, c: Core) -> np.ndarray:
    """Cycles per execution of each block: its busiest resource."""
    per_block = resource_cycles(profile, c)
    return per_block.max(axis=1) if len(per_block) else np.zeros(0)


def estimate(profile: Profile, c: Core) -> dict:
    """Estimated cycles of the profile's regions on `c`, ms at its board's clock, and the cycles of the
    blocks each resource bounds."""
    per_block = resource_cycles(profile, c)
    if not len(per_block):
        per_block = np.zeros((0, len(RESOURCES)))
    total = per_block.max(axis=1, initial=0.0) * profile.executions.astype(np.float64)
    limiter = per_block.argmax(axis=1) if len(per_block) else np.zeros(0, np.int64)
    cycles = float(total.sum())
    return {"core": c.name, "board": c.board, "clock_ghz": c.clock_ghz, "cycles": cycles,
            "ms": cycles / (c.clock_ghz * 1e6),
            "bound_by": {r: float(total[limiter == i].sum()) for i, r in enumerate(RESOURCES)}}
