"""What the CPU schedules need to know about a target: vector lanes and registers."""

from __future__ import annotations

from dataclasses import dataclass

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
