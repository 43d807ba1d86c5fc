"""`c2f-edge parity` end to end: exit codes, the Markdown table, --json, manifests, clear errors."""

import contextlib
import io
import json
import shutil

import pytest

from c2f_edge.cli import main


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_passing_run_writes_table_json_and_manifest(onnx_artifact, tmp_path):
    art = tmp_path / "onnx"
    shutil.copytree(onnx_artifact, art)
    rc, out, err = _cli(["parity", str(art), "-n", "2", "--json", str(tmp_path / "p.json")])
    assert rc == 0, err
    assert "| onnxruntime | fp32 |" in out and "PASS" in out
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["schema"] == "c2f-edge.parity/1" and data["passed"] is True
    assert data["inputs"]["names"] == ["astronaut", "chelsea"]
    m = json.loads((art / "manifest.json").read_text())
    assert m["parity"]["harness"]["onnxruntime"]["status"] == "pass"
    assert "onnxruntime_vs_torch" in m["parity"]  # the export's own section is kept


@pytest.mark.slow
def test_mismatch_exits_nonzero_and_names_the_block(mutated_onnx, tmp_path):
    rc, out, err = _cli(["parity", str(mutated_onnx("stages.2.3.mlp.fc1.weight")), "-n", "1", "--no-manifest",
                         "--json", str(tmp_path / "p.json")])
    assert rc == 2
    assert "**FAIL**" in out and "stages.2.3.mlp" in out
    assert "error: parity failed for 1 backend(s): onnxruntime" in err and "diverges at stages.2.3.mlp" in err
    assert "hint:" in err
    assert json.loads((tmp_path / "p.json").read_text())["backends"][0]["localization"]["block"] == "stages.2.3"


def test_missing_artifact(tmp_path):
    rc, _, err = _cli(["parity", str(tmp_path / "nope")])
    assert rc == 2 and f"error: artifact not found: {tmp_path / 'nope'}" in err and "hint:" in err


def test_not_an_artifact(tmp_path):
    rc, _, err = _cli(["parity", str(tmp_path)])
    assert rc == 2 and "no manifest.json" in err


def test_bad_tolerance_fails_fast(tmp_path):
    rc, _, err = _cli(["parity", str(tmp_path), "--tol", "fp16.max_abs"])
    assert rc == 2 and "bad --tol" in err and "CLASS.KEY=NUMBER" in err


def test_bad_backend_spec():
    rc, _, err = _cli(["parity", "--backend", "tvm-local"])
    assert rc == 2 and "bad --backend" in err


@pytest.mark.slow
def test_undecodable_image(onnx_artifact, tmp_path):
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rc, _, err = _cli(["parity", str(onnx_artifact), "--images", str(tmp_path), "--no-manifest"])
    assert rc == 2 and "cannot decode image" in err and "img.png" in err


@pytest.mark.slow
def test_cross_bundle_needs_rpc_and_unreachable_rpc(arm64_bundle):
    rc, _, err = _cli(["parity", str(arm64_bundle), "--no-manifest"])
    assert rc == 2 and "does not run on this machine" in err and "--rpc" in err
    from c2f_edge.board.rpc import free_port

    port = free_port()
    rc, _, err = _cli(["parity", str(arm64_bundle), "--rpc", f"rpc://127.0.0.1:{port}", "--no-manifest"])
    assert rc == 3 and f"cannot reach RPC server at 127.0.0.1:{port}" in err and "hint:" in err
