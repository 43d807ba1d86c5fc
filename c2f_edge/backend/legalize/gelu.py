"""GELU as one vectorizable rational function of x: the stock legalization calls scalar libm `erff`, which
is never vectorized (652 call sites in the .so).

    GELU(x) = x * max(1/2 + t P(t^2) / Q(t^2), 0),  t = x clamped to [-CLAMP, CLAMP]

is exact GELU, x (1 + erf(x / sqrt 2)) / 2, with erf a rational function whose constants (the 1/sqrt 2 and
the 1/2) are folded into the coefficients and Q made monic, fitted by scripts/fit_gelu.py. Max abs error
9.3e-7 against float64 GELU for |x| <= 12 (fp32 rounding included; TOPI's `fast_erf`, used before: 1.4e-6),
and beyond the clamp at most one fp32 ulp of x, never of the wrong sign. Against TOPI's form it saves the
scaling multiplies and evaluates the polynomials by Estrin's scheme instead of Horner's: shorter
dependency chains, and on NEON, whose FMA overwrites its addend, fewer register copies. Conv2Former-N
evaluates 9.5 million GELUs per image; on the emulated Cortex-A76 this cut 11.8 M instructions and 1.9%
of the estimated cycles.

The coefficients need fp32's range (Q reaches 2.4e6 at the clamp): in an fp16 build the GELU reads and
writes fp16 but computes in `compute` (fp32, see backend/precision.py)."""

from __future__ import annotations

import math

CLAMP = 4 * math.sqrt(2)  # erf(4) rounds to 1 in fp32
NUM = (4719.74698, 494.872674, 57.9702555, 2.76834809, 0.0477621093, -0.000280233105, 1.27297321e-06)
DEN = (11830.6762, 3212.12459, 385.070817, 25.8988026, 1.0)


def estrin(coeffs, s):
    """sum(c_i s^i) as pairs c_i + c_{i+1} s, then pairs of those with s^2, s^4, ... (any number type)."""
    terms = [coeffs[i] + coeffs[i + 1] * s if i + 1 < len(coeffs) else coeffs[i] for i in range(0, len(coeffs), 2)]
    power = s * s
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] * power if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
        power = power * power
    return terms[0]


def gelu_legalizer(compute: str = "float32", bind: bool = False):
    """A LegalizeOps customization for relax.nn.gelu, computed in `compute` whatever the tensor's dtype.
    bind: let-bind t and t^2 (GPU kernels are OpenCL C source, where each inlined copy is text; LLVM
    finds the common subexpressions itself, so CPU kernels keep the plain expression)."""

    def legalize(bb, call):
        return bb.call_te(_gelu, call.args[0], compute, bind, primfunc_name_hint="gelu")

    return legalize


def _gelu(x, compute, bind=False):
    from tvm import te, tirx

    def const(v):
        return tirx.const(v, compute)

    def body(*i):
        y = x(*i) if str(x.dtype) == compute else x(*i).astype(compute)
        t = tirx.max(tirx.min(y, const(CLAMP)), const(-CLAMP))
        tv, sv = (tirx.Var("t", compute), tirx.Var("s", compute)) if bind else (t, t * t)
        r = estrin([const(c) for c in NUM], sv) * tv / estrin([const(c) for c in DEN], sv)
        out = y * tirx.max(const(0.5) + r, const(0.0))  # 1/2 + r can round to -6e-8 at the clamp
        if bind:
            out = tirx.Let(tv, t, tirx.Let(sv, tv * tv, out))
        return out if str(x.dtype) == compute else out.astype(x.dtype)

    return te.compute(x.shape, body, name="T_gelu")
