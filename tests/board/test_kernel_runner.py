"""ARM bundles checked with no board: the VM here, the bundle's own kernels under qemu user mode.

This is how armv7 builds are checked at all (no armv7 TVM runtime exists to put on an emulated board):
the whole Conv2Former-N armv7 bundle, default schedules, against PyTorch through the parity harness.
"""

from __future__ import annotations

import numpy as np
import pytest

from c2f_edge.board.kernel_runner import KernelRunner, emulation_for, run_bundle
from c2f_edge.core.errors import ArtifactError, RemoteError
from tests.fixtures.profiling import TINY_SHAPE, build_tiny_bundle

pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-qemu")
    return (build_tiny_bundle(root / "host", "host"), build_tiny_bundle(root / "armv7", "armv7"),
            build_tiny_bundle(root / "arm64", "arm64"))


def test_a_tiny_armv7_bundle_computes_what_the_host_build_computes(tiny_pair):
    from c2f_edge.compile import load_bundle

    host, armv7, _ = tiny_pair
    x = np.random.default_rng(0).standard_normal(TINY_SHAPE).astype("float32")
    assert emulation_for(armv7 / "model.so")[1] == "armhf"
    got, want = run_bundle(armv7, x), load_bundle(host)(x)
    assert got.shape == want.shape == (1, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_arm64_bundles_run_kernel_by_kernel_too_with_every_kernel_output(tiny_pair):
    """The runner is not armv7-only: an aarch64 bundle's kernels run under qemu-aarch64 the same way,
    and `capture` returns each kernel's output in call order (what parity localizes with)."""
    from c2f_edge.compile import load_bundle

    host, _, arm64 = tiny_pair
    x = np.random.default_rng(1).standard_normal(TINY_SHAPE).astype("float32")
    assert emulation_for(arm64 / "model.so")[0] == "qemu-aarch64-static"
    got, outputs = run_bundle(arm64, x, capture=True)
    np.testing.assert_allclose(got, load_bundle(host)(x), rtol=1e-5, atol=1e-6)
    assert len(outputs) == 7  # conv-gelu-conv-gelu-mean-matmul-add
    _, last = outputs[-1]
    np.testing.assert_array_equal(last, got)


def test_the_conv2former_armv7_bundle_passes_parity(armv7_bundle, tmp_path):
    """Default schedules (NEON, 16 registers, weights packed by 4) on an emulated Cortex-A7."""
    from c2f_edge.parity import api

    result = api.check([], explicit=[("tvm-qemu", str(armv7_bundle))], n=1, localize=False, record=False,
                       json_path=str(tmp_path / "parity.json"), quiet=True)
    (entry,) = result["backends"]
    assert result["passed"] and entry["status"] == "pass", entry["failures"]
    assert entry["metrics"]["max_abs_diff"] < 1e-3 and entry["metrics"]["top1_agreement"] == 1.0


def test_a_failing_kernel_check_is_a_one_line_error(tiny_pair):
    """A wrong shape trips the kernel's own argument check, reported through the runner."""
    _, armv7, _ = tiny_pair
    with KernelRunner(armv7 / "model.so") as runner:
        with pytest.raises(RemoteError, match="kernel add failed under emulation"):
            runner.call("add", [np.zeros((1, 3), "float32")] * 3)
        with pytest.raises(RemoteError, match="no kernel nope"):
            runner.call("nope", [])


def test_a_bundle_for_this_machine_is_refused(tiny_pair):
    host, *_ = tiny_pair
    with pytest.raises(ArtifactError, match="not an ARM bundle"):
        run_bundle(host, np.zeros(TINY_SHAPE, "float32"))
