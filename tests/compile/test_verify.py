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


def test_a_bundle_that_disagrees_with_pytorch_is_not_written(mutated_onnx, tmp_path, capsys):
    """An ONNX whose weights are not the ones its manifest names (one element of stages.2.3's MLP off
    by 1): the build itself works, the check against PyTorch fails, and nothing is left behind."""
    from tests.compile.test_stage import _fails, _no_bundle

    bad = mutated_onnx("stages.2.3.mlp.fc1.weight")
    out = tmp_path / "b"
    err = _fails(["compile", "--target", "host", "--onnx", str(bad / "model.onnx"), "--tuning-log", "none",
                  "--out", str(out)], capsys, "disagrees with torch fp32", "max_abs_diff")
    assert "--no-verify" in err
    _no_bundle(out)


@pytest.mark.parametrize("case", ["host-on-the-emulated-board", "no-qemu", "unreachable-server", "unknown-key"])
def test_what_verify_could_not_check_is_refused_before_the_build(case, tiny_onnx, rpc_tracker, tmp_path, capsys,
                                                                 monkeypatch):
    """A bundle the emulated board cannot run, an emulator that is not installed, a board that does not
    answer: `compile --verify` says so before it spends minutes building, and leaves nothing behind."""
    from c2f_edge.board.rpc import free_port
    from c2f_edge.cli import main
    from c2f_edge.compile import build_job
    from tests.compile.test_stage import _no_bundle

    def built(*a, **k):
        pytest.fail("the bundle was built before --verify was refused")

    monkeypatch.setattr(build_job, "run_build_job", built)
    target, verify, says, code = {
        "host-on-the-emulated-board": ("host", "emulated", "does not run there", 2),
        "no-qemu": ("arm64", "emulated", "qemu-aarch64-static not found on PATH", 2),
        "unreachable-server": ("rpi5", f"rpc://127.0.0.1:{free_port()}", "cannot reach RPC server", 3),
        "unknown-key": ("arm64", f"rpc://tracker@{rpc_tracker.address}/rk3588", "no RPC server registered", 3),
    }[case]
    if case == "no-qemu":
        monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "b"
    assert main(["compile", "--target", target, "--onnx", str(tiny_onnx), "--verify", verify, "--out", str(out)]) == code
    err = capsys.readouterr().err
    assert says in err and "hint:" in err, err
    _no_bundle(out)


@pytest.mark.emulated
def test_compile_verify_emulated_end_to_end(tiny_onnx, tmp_path, capsys):
    """`compile --target arm64 --verify emulated`: the aarch64 bundle runs on the emulated board and is
    judged before it is written (a small net: emulation is slow). Its ONNX file records no weights, so
    the reference is ONNX Runtime on that file, and the manifest says so."""
    import json

    from c2f_edge.cli import main

    out = tmp_path / "arm64"
    assert main(["compile", "--target", "arm64", "--onnx", str(tiny_onnx), "--verify", "emulated",
                 "--out", str(out)]) == 0
    assert "verified (emulated, emulated aarch64 board" in capsys.readouterr().out
    par = json.loads((out / "manifest.json").read_text())["parity"]
    assert par["status"] == "passed"
    res = par["emulated"]
    assert res["reference"].startswith("onnxruntime") and res["n_inputs"] == 2 and res["top1_agreement"] == 1.0
    # the bundle's own arithmetic (polynomial erf, other summation order): close, never bit-identical,
    # so the logits came from the board and not from the reference path
    assert 0 < res["max_abs_diff"] <= res["tolerance"]["max_abs"]


def test_verify_over_rpc_runs_the_bundle_on_the_server(host_bundle, host_rpc_server, rpc_tracker):
    url = f"rpc://tracker@{rpc_tracker.address}/{host_rpc_server.key}"
    res = verify_bundle(host_bundle, url, n=1)
    assert res["device"] == url and res["how"] == url and res["reference"] == "torch fp32"
    assert 0 < res["max_abs_diff"] <= res["tolerance"]["max_abs"]
