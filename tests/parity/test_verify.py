"""The post-build check that `c2f-edge compile --verify` calls."""

import pytest

from c2f_edge.core.errors import RemoteError, UsageError
from c2f_edge.parity.verify import verify_bundle

pytestmark = pytest.mark.slow


def test_host_bundle_verifies(host_bundle):
    res = verify_bundle(host_bundle, n=1)
    assert res["reference"] == "torch fp32" and res["metrics"]["n_inputs"] == 1
    assert res["metrics"]["max_abs_diff"] <= res["tolerance"]["max_abs"]


def test_bad_and_unreachable_verify_targets(host_bundle):
    with pytest.raises(UsageError, match="bad RPC address"):
        verify_bundle(host_bundle, "board:9090")
    from c2f_edge.board.rpc import free_port

    with pytest.raises(RemoteError, match="cannot reach"):
        verify_bundle(host_bundle, f"rpc://127.0.0.1:{free_port()}")


def test_emulated_verifier_is_registered():
    from c2f_edge.compile.stage import VERIFIERS

    assert "emulated" in VERIFIERS
