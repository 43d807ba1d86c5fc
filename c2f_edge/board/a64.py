"""A64 instruction words by class: what the instruction-count plugin's profiles (board/insn_count.py) and
the cycle model (board/cycle_model.py) read. Decoded from the encoding groups of the Arm Architecture
Reference Manual (chapter C4, "A64 Instruction Set Encoding"), not from a disassembler's text: qemu 7.2's
does not name fp16 vector FMAs."""

from __future__ import annotations

import numpy as np

# Instruction classes, in the order of the ids `classify` returns.
CLASSES = ("fma_f32x4", "fma_f32x2", "fma_f16x8", "fma_f16x4", "fma_f64x2", "neon_other", "neon_load",
           "neon_store", "fp_scalar", "load", "store", "branch", "other")
FMA_LANES = {"fma_f32x4": 4, "fma_f32x2": 2, "fma_f16x8": 8, "fma_f16x4": 4, "fma_f64x2": 2}
_ID = {name: i for i, name in enumerate(CLASSES)}


def _bits(w: np.ndarray, hi: int, lo: int) -> np.ndarray:
    return ((w >> np.uint32(lo)) & np.uint32((1 << (hi - lo + 1)) - 1)).astype(np.int64)


def classify(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class id, NEON bytes moved) per A64 instruction word, decoded from its encoding groups (Arm
    Architecture Reference Manual, chapter C4, "A64 Instruction Set Encoding")."""
    w = np.asarray(words, np.uint32)
    cls = np.full(w.shape, _ID["other"], np.int8)
    nbytes = np.zeros(w.shape, np.int64)
    op0, top, q = _bits(w, 28, 25), _bits(w, 28, 24), _bits(w, 30, 30)

    # Branches, exception generation and system: op0 = 101x. svc, hints, barriers and msr stay "other".
    branch = (op0 & 0b1110) == 0b1010
    system = (_bits(w, 31, 24) == 0b11010100) | (_bits(w, 31, 22) == 0b1101010100)
    cls[branch & ~system] = _ID["branch"]

    # Loads and stores: op0 = x1x0; bit 26 says SIMD&FP register.
    ldst, simd_reg = (op0 & 0b0101) == 0b0100, _bits(w, 26, 26) == 1
    form = _bits(w, 29, 27)
    pair, reg, literal = ldst & (form == 0b101), ldst & (form == 0b111), ldst & (form == 0b011)
    structs = ldst & simd_reg & (_bits(w, 31, 31) == 0) & (_bits(w, 29, 25) == 0b00110)  # LD1-4, ST1-4, LD1R-4R
    single = structs & (_bits(w, 24, 24) == 1)
    is_load = np.where(literal, True, _bits(w, 22, 22) == 1)
    is_load = np.where(reg & ~simd_reg, _bits(w, 23, 22) != 0, is_load)  # LDRSW and friends have opc = 1x
    # Bytes: a pair of s/d/q registers (opc 00/01/10); one register (size, or q when opc<1> is set); a
    # structure of 1-4 registers of 8 or 16 bytes; one element (b/h/s/d, or replicated) of 1-4 registers.
    pair_reg = 4 << _bits(w, 31, 30)
    one_reg = np.where(_bits(w, 23, 23) == 1, 16, 1 << _bits(w, 31, 30))
    n_regs = np.select([_bits(w, 15, 12) == op for op in (0b0111, 0b1010, 0b0110, 0b0010, 0b1000, 0b0100, 0b0000)],
                       [1, 2, 3, 4, 2, 3, 4], 1)
    scale = _bits(w, 15, 14)
    element = np.select([scale == 0, scale == 1, (scale == 2) & (_bits(w, 10, 10) == 0), scale == 2],
                        [1, 2, 4, 8], 1 << _bits(w, 11, 10))
    n_elem = (_bits(w, 13, 13) * 2 + _bits(w, 21, 21)) + 1
    size = np.select([single, structs, pair, reg], [element * n_elem, n_regs * (8 + 8 * q), 2 * pair_reg, one_reg], 0)
    # q-register accesses and structures are NEON; s/d registers are scalar, like the integer ones.
    neon = structs | (simd_reg & pair & (pair_reg == 16)) | (simd_reg & reg & (one_reg == 16))
    scalar = ldst & ~neon
    cls[scalar & is_load], cls[scalar & ~is_load] = _ID["load"], _ID["store"]
    cls[neon & is_load], cls[neon & ~is_load] = _ID["neon_load"], _ID["neon_store"]
    nbytes[neon] = size[neon]

    # Scalar floating point and Advanced SIMD: op0 = x111. Scalar FP has bit 30 clear and top 1111x;
    # everything else there (vector, and SIMD scalar forms) is NEON.
    simd_fp = (op0 & 0b0111) == 0b0111
    scalar_fp = simd_fp & (_bits(w, 30, 30) == 0) & ((top == 0b11110) | (top == 0b11111))
    cls[simd_fp & ~scalar_fp] = _ID["neon_other"]
    cls[scalar_fp] = _ID["fp_scalar"]
    # FMLA/FMLS (vector): three same, single/double (bit 22: double) or half precision; and by element.
    vec = simd_fp & (_bits(w, 31, 31) == 0) & (_bits(w, 29, 29) == 0)
    same32_64 = vec & (top == 0b01110) & (_bits(w, 21, 21) == 1) & (_bits(w, 15, 10) == 0b110011)
    same16 = vec & (top == 0b01110) & (_bits(w, 22, 21) == 0b10) & (_bits(w, 15, 10) == 0b000011)
    elem = vec & (top == 0b01111) & ((_bits(w, 15, 12) == 0b0001) | (_bits(w, 15, 12) == 0b0101)) & \
        (_bits(w, 10, 10) == 0)
    fp32_64, fp16 = same32_64 | (elem & (_bits(w, 23, 23) == 1)), same16 | (elem & (_bits(w, 23, 22) == 0))
    double = _bits(w, 22, 22) == 1
    for mask, name in ((fp32_64 & ~double & (q == 1), "fma_f32x4"), (fp32_64 & ~double & (q == 0), "fma_f32x2"),
                       (fp32_64 & double, "fma_f64x2"), (fp16 & (q == 1), "fma_f16x8"),
                       (fp16 & (q == 0), "fma_f16x4")):
        cls[mask] = _ID[name]
    return cls, nbytes
