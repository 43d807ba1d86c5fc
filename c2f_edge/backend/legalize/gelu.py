"""GELU with TOPI's polynomial erf: the stock legalization calls scalar libm `erff`, which is never
vectorized (652 call sites in the .so; max abs error of the GELU < 2e-6).

In an fp16 build the GELU reads and writes fp16 but computes in `compute` (fp32, see
backend/precision.py): TOPI's erf evaluated in fp16 (the same 12-coefficient rational function) more
than doubled the logit error of Conv2Former-N."""

from __future__ import annotations


def gelu_legalizer(compute: str = "float32"):
    """A LegalizeOps customization for relax.nn.gelu, computed in `compute` whatever the tensor's dtype."""

    def legalize(bb, call):
        return bb.call_te(_gelu, call.args[0], compute, primfunc_name_hint="gelu")

    return legalize


def _gelu(x, compute):
    from tvm import tirx, topi

    y = x if str(x.dtype) == compute else topi.cast(x, compute)
    one_half = tirx.const(0.5, compute)
    out = y * (one_half + topi.fast_erf(y * tirx.const(0.5**0.5, compute)) * one_half)
    return out if str(x.dtype) == compute else topi.cast(out, x.dtype)

