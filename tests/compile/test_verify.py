"""The post-build check behind `c2f-edge compile --verify`: the bundle on photos against PyTorch fp32."""

import pytest

from c2f_edge.compile.verify import VERIFIERS, resolve_verifier, verify_bundle
from c2f_edge.core.errors import RemoteError, UsageError

pytestmark = pytest.mark.slow


def test_host_bundle_verifies_against_torch(host_bundle):
    res = verify_bundle(host_bundle, n=1)
    assert res["reference"] == "torch fp32" and res["n_inputs"] == 1 and res["device"] == "this machine"
    assert res["max_abs_diff"] <= res["tolerance"]["max_abs"]


def test_bad_and_unreachable_verify_targets(host_bundle):
    with pytest.raises(UsageError, match="bad RPC address"):
        verify_bundle(host_bundle, "rpc://board")
    with pytest.raises(UsageError, match="unknown --verify mode"):
        verify_bundle(host_bundle, "board:9090")
    from c2f_edge.board.rpc import free_port

    with pytest.raises(RemoteError, match="cannot reach"):
        verify_bundle(host_bundle, f"rpc://127.0.0.1:{free_port()}")


def test_every_mode_resolves_before_anything_is_built():
    assert {"local", "emulated", "rpc://"} <= set(VERIFIERS)
    assert resolve_verifier("none") == "none" and resolve_verifier("auto") == "auto"
    assert callable(resolve_verifier("rpc://tracker@127.0.0.1:9190/rk3588"))
