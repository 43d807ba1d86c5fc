"""The cycle model on hand-made blocks, against hand calculations (and llvm-mca's A57 model for the A72)."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from c2f_edge.board import cycle_model
from c2f_edge.board.insn_count import Profile
from c2f_edge.core.errors import UsageError

# A64 words (checked against llvm-mc in the llvm-mca test below).
WORDS = {
    "fmla v0.4s, v1.4s, v2.4s": 0x4E22CC20,
    "fmla v0.8h, v1.8h, v2.8h": 0x4E420C20,
    "fadd v0.2s, v1.2s, v2.2s": 0x0E22D420,
    "ldr q6, [x0], #16": 0x3CC10406,
    "ld1 {v0.4s, v1.4s, v2.4s, v3.4s}, [x0]": 0x4C402800,
    "str q0, [x3], #16": 0x3C810460,
    "ldr s1, [x0]": 0xBD400001,
    "subs x1, x1, #1": 0xF1000421,
    "add x2, x2, #1": 0x91000442,
    "b.ne #-16": 0x54FFFF81,
    "cbnz x1, #-8": 0xB5FFFFC1,
}

FMA_BOUND = ["fmla v0.4s, v1.4s, v2.4s"] * 8 + ["ldr q6, [x0], #16", "subs x1, x1, #1", "b.ne #-16"]
LOAD_BOUND = ["ldr q6, [x0], #16"] * 6 + ["fmla v0.4s, v1.4s, v2.4s"] * 2 + ["b.ne #-16"]
BRANCHY = ["add x2, x2, #1", "cbnz x1, #-8"]


def profile(*blocks: tuple[list[str], int]) -> Profile:
    words = [WORDS[i] for block, _ in blocks for i in block]
    starts = np.cumsum([0] + [len(block) for block, _ in blocks])
    return Profile(1, np.arange(len(blocks), dtype=np.uint64) * 64, np.array([n for _, n in blocks], np.uint64),
                   np.array(words, np.uint32), starts.astype(np.int64))


A76, A72 = cycle_model.core("cortex-a76"), cycle_model.core("cortex-a72")


@pytest.mark.parametrize(("block", "a76", "a72", "a76_bound", "a72_bound"), [
    # 8 Q-form FMAs: the A76 issues two a cycle (V0, V1); on the A72 each takes both FP pipes.
    (FMA_BOUND, 8 / 2, 8 * 2 / 2, "fp", "fp"),
    # 6 Q loads: two load pipes on the A76, one on the A72.
    (LOAD_BOUND, 6 / 2, 6 / 1, "load", "load"),
    # An add and a branch: one branch a cycle on both.
    (BRANCHY, 1.0, 1.0, "branch", "branch"),
])
def test_a_block_costs_its_busiest_resource(block, a76, a72, a76_bound, a72_bound):
    p = profile((block, 1000))
    for core, want, bound in ((A76, a76, a76_bound), (A72, a72, a72_bound)):
        assert cycle_model.block_cycles(p, core) == pytest.approx([want])
        est = cycle_model.estimate(p, core)
        assert est["cycles"] == pytest.approx(1000 * want)
        assert est["bound_by"][bound] == pytest.approx(1000 * want)
        assert est["ms"] == pytest.approx(1000 * want / (core.clock_ghz * 1e6))


def test_decode_width_bounds_a_block_of_mixed_work():
    # 4 FMAs, 4 scalar loads, 4 adds: no pipe is full on the A76 (fp 2, load 2, int 4/3), decode is (12/4).
    block = ["fmla v0.4s, v1.4s, v2.4s", "ldr s1, [x0]", "add x2, x2, #1"] * 4
    assert cycle_model.block_cycles(profile((block, 1)), A76) == pytest.approx([3.0])
    assert cycle_model.estimate(profile((block, 1)), A76)["bound_by"]["decode"] == pytest.approx(3.0)


def test_wide_neon_accesses_take_a_uop_per_16_bytes():
    # ld1 of four q registers: 4 load uops; str q on the A72: two store uops (A57 model: STRQ = 2 S).
    assert cycle_model.block_cycles(profile((["ld1 {v0.4s, v1.4s, v2.4s, v3.4s}, [x0]"], 1)), A72) == [4.0]
    assert cycle_model.block_cycles(profile((["str q0, [x3], #16"], 1)), A72) == [2.0]
    # D-form FP takes one FP pipe on the A72, a Q-form two.
    assert cycle_model.block_cycles(profile((["fadd v0.2s, v1.2s, v2.2s"] * 4, 1)), A72) == [2.0]


def test_blocks_add_up_by_executions():
    p = profile((FMA_BOUND, 10), (BRANCHY, 7), (LOAD_BOUND, 0))
    assert cycle_model.estimate(p, A76)["cycles"] == pytest.approx(10 * 4 + 7 * 1)


def test_the_a72_refuses_fp16_vector_arithmetic():
    with pytest.raises(UsageError, match="fp16 vector arithmetic, which the cortex-a72 does not have"):
        cycle_model.estimate(profile((["fmla v0.8h, v1.8h, v2.8h"], 1)), A72)
    # On the A76 an fp16 FMA does 8 lanes in the time an fp32 FMA does 4: one V uop either way.
    assert cycle_model.block_cycles(profile((["fmla v0.8h, v1.8h, v2.8h"] * 4, 1)), A76) == [2.0]


def test_cores_without_a_model_are_named_with_the_stand_in():
    assert cycle_model.core("cortex-a78ae") is A76 and cycle_model.core("neoverse-n1") is A76
    with pytest.raises(UsageError, match="no cycle model for 'cortex-a53'"):
        cycle_model.core("cortex-a53")


@pytest.mark.skipif(not (shutil.which("llvm-mca") and shutil.which("llvm-mc")), reason="llvm-mca is not installed")
@pytest.mark.parametrize("block", [FMA_BOUND, LOAD_BOUND, BRANCHY])
def test_the_a72_model_agrees_with_llvm_mca_on_throughput_bound_blocks(block, tmp_path):
    """Debian's llvm-mca models every Arm core with LLVM's Cortex-A57 model, the A72's pipeline."""
    src = tmp_path / "block.s"
    src.write_text("\n".join(block) + "\n")
    enc = subprocess.run(["llvm-mc", "-triple=aarch64", "-mattr=+fullfp16", "-show-encoding", str(src)],
                         capture_output=True, text=True, check=True).stdout
    words = [int.from_bytes(bytes(int(b, 16) for b in m.split(",")), "little")
             for m in re.findall(r"encoding: \[([^\]]+)\]", enc)]
    assert words == [WORDS[i] for i in block]
    mca = subprocess.run(["llvm-mca", "-mtriple=aarch64", "-mcpu=cortex-a57", "-iterations=100", str(src)],
                         capture_output=True, text=True, check=True).stdout
    rthroughput = float(re.search(r"Block RThroughput:\s+([\d.]+)", mca).group(1))
    assert cycle_model.block_cycles(profile((block, 1)), A72)[0] == pytest.approx(rthroughput)
