"""The pipeline's count of where each kernel's schedule came from (the manifest's tuning.kernels), and the
digest of the backend's source that bundle manifests record."""

from __future__ import annotations

import shutil
from pathlib import Path


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


def test_a_backend_source_change_changes_its_digest(tmp_path, monkeypatch):
    from c2f_edge.backend import pipeline

    copy = tmp_path / "backend"
    shutil.copytree(Path(pipeline.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "__file__", str(copy / "pipeline.py"))
    pipeline.source_digest.cache_clear()
    try:
        before = pipeline.source_digest()
        rule = copy / "schedules" / "split_reduction.py"
        rule.write_text(rule.read_text() + "\n# a comment\n")
        pipeline.source_digest.cache_clear()
        assert pipeline.source_digest() != before
    finally:
        pipeline.source_digest.cache_clear()
