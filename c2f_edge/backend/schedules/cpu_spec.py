"""What the CPU schedules need to know about a target: vector lanes and registers."""

from __future__ import annotations

from dataclasses import dataclass, field

# More accumulators than this in one register tile ran slower on AVX-512 (LLVM spills): the blocked
# 1x1 convs with 28 took 0.99 ms against 0.37 ms with 16 (stage 2, 14x14).
MAX_ACCUMULATORS = 16


@dataclass(frozen=True)
class CpuSpec:
    """What the schedules need to know about a CPU target."""

    lanes: int  # lanes of the kernel's dtype per vector register (NEON: 4 float32, 8 float16)
    registers: int  # vector registers
    vector_bits: int = field(default=0, compare=False)  # bits per vector register (0: 32 x lanes)

    @property
    def register_bits(self) -> int:
        return self.vector_bits or 32 * self.lanes

    @property
    def accumulators(self) -> int:
        """Vector registers a register tile may use (the rest hold operands)."""
        return self.registers - 4


def cpu_spec(target, dtype: str = "float32") -> CpuSpec:
    """The vector registers of an llvm target, in lanes of `dtype`."""
    from tvm import DataType
    from tvm.target import codegen

    bits = DataType(dtype).bits

    def has(feature):
        try:
            return bool(codegen.target_has_features(feature, target))
        except Exception:  # noqa: BLE001 - an unknown feature name on this arch
            return False

    triple = target_triple(target)
    if has("avx512f"):
        return CpuSpec(lanes=512 // bits, registers=32, vector_bits=512)
    if has("avx2") or has("avx"):
        return CpuSpec(lanes=256 // bits, registers=16, vector_bits=256)
    if triple.startswith(("aarch64", "arm64")):
        return CpuSpec(lanes=128 // bits, registers=32, vector_bits=128)
    return CpuSpec(lanes=128 // bits, registers=16, vector_bits=128)  # armv7 NEON (16 q registers), SSE


def target_triple(target) -> str:
    """The llvm target's triple (this machine's when the target names none)."""
    from tvm.target import codegen

    return str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple())
