"""The classifier of an fp16 graph sums in fp32 (after ToMixedPrecision).

ToMixedPrecision(out_dtype="float16") makes every matmul accumulate in fp16. The classifier's sums
are the logits themselves, where one fp16 step is 0.002 at a logit of 2.5; it is 0.02% of
Conv2Former-N's MACs, so its fp32 sum costs nothing: `matmul(a, b, out_dtype=fp16)` becomes
`astype(matmul(a, b, out_dtype=fp32), fp16)`, and LegalizeOps builds an fp32 reduction of fp16 inputs.
"""

from __future__ import annotations


def widen_classifier():
    """A Relax pass: every fp16 matmul (in Conv2Former, only the classifier) accumulates in fp32."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class _Widen(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"
                    and str(call.attrs.out_dtype) == "float16"):
                return call
            wide = self.builder_.emit(relax.op.matmul(call.args[0], call.args[1], out_dtype="float32"))
            return relax.op.astype(wide, "float16")

    @tvm.transform.module_pass(opt_level=0, name="c2f_edge_widen_classifier")
    def _pass(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gv] = _Widen(mod).visit_expr(func)
        return mod

    return _pass
