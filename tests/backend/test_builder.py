"""The persistent-pool MetaSchedule builder: builds real candidates, reuses its workers, reports failures."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _matmul_mod(n=64):
    import tvm
    from tvm import te

    a = te.placeholder((n, n), name="A")
    b = te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


@pytest.fixture(scope="module")
def builder():
    from c2f_edge.backend.builder import PoolBuilder

    b = PoolBuilder(max_workers=1, timeout_sec=120)
    yield b
    b.shutdown()


def _host():
    from c2f_edge.backend import targets
    from c2f_edge.backend.targets import as_target

    return as_target(targets.get("host").to_json())


def test_builds_a_loadable_shared_object(builder):
    import tvm
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    (res,) = builder.build([BuilderInput(_matmul_mod(), _host())])
    assert res.error_msg is None, res.error_msg
    assert res.artifact_path.endswith(".so")
    f = tvm.runtime.load_module(res.artifact_path)["main"]
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))
    c = tvm.runtime.tensor(np.zeros((64, 64), np.float32))
    f(tvm.runtime.tensor(a), tvm.runtime.tensor(b), c)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-4, atol=1e-4)


def test_workers_persist_and_skip_the_tensor_intrinsics_import(builder):
    """The point of this builder: one pool for the whole run, no 34 s `tvm.s_tir.tensor_intrin` import."""
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    def probe():
        import os
        import sys

        return os.getpid(), "tvm.s_tir.tensor_intrin" in sys.modules

    builder.build([BuilderInput(_matmul_mod(32), _host())])
    pid1, imported = builder._pool.submit(probe).result()
    builder.build([BuilderInput(_matmul_mod(48), _host())])
    pid2, _ = builder._pool.submit(probe).result()
    assert pid1 == pid2, "the builder started a new worker for the next batch"
    assert not imported


def test_a_broken_candidate_is_a_build_error_not_a_crash(builder):
    import tvm
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    bad = tvm.target.Target({"kind": "llvm", "mtriple": "no-such-triple"})
    good, broken = builder.build([BuilderInput(_matmul_mod(), _host()), BuilderInput(_matmul_mod(), bad)])
    assert good.error_msg is None
    assert broken.artifact_path is None and "PoolBuilder" in broken.error_msg


def test_linker_pickles():
    from c2f_edge.backend.builder import SharedLinker

    link = pickle.loads(pickle.dumps(SharedLinker(["g++"])))
    assert link.cmd == ["g++"] and link.output_format == "so"
