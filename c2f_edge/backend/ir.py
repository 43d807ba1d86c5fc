"""Small questions about Relax expressions that several passes and legalizations ask."""

from __future__ import annotations


def static_shape(expr) -> list[int] | None:
    """The shape of a Relax expression if every dimension is a constant, else None."""
    import tvm

    shape = getattr(getattr(expr, "ty", None), "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(d, tvm.ir.prim.expr.IntImm) for d in values):
        return None
    return [int(d) for d in values]


def const_scalar(expr) -> float | None:
    """The value of a one-element constant, else None."""
    import tvm

    if not isinstance(expr, tvm.ir.expr.Constant):
        return None
    value = expr.value.numpy()
    return float(value.reshape(-1)[0]) if value.size == 1 else None
