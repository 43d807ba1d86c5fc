"""The pipeline's count of where each kernel's schedule came from (the manifest's tuning.kernels)."""

from __future__ import annotations


def _copy_kernel():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def copy(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
        for i in range(4):
            with T.sblock("b"):
                vi = T.axis.spatial(4, i)
                b[vi] = a[vi]

    return copy


def test_kernels_split_by_the_option_are_not_counted_as_taken_from_the_log():
    import tvm

    from c2f_edge.backend import pipeline
    from c2f_edge.backend.schedules.split_reduction import ATTR

    f = _copy_kernel()
    mod = tvm.IRModule({"default": f, "from_log": f.with_attr("tirx.is_scheduled", True),
                        "split": f.with_attr("tirx.is_scheduled", True).with_attr(ATTR, True)})
    applied = pipeline.TuningApplied()
    pipeline.count_tuned(applied)(mod)
    assert (applied.kernels, applied.from_log, applied.split) == (3, 1, 1)
