"""Parity passes on every backend for synthetic Conv2Former-N (artifacts from the session fixtures)."""

import json
import shutil

import pytest

from c2f_edge.parity.harness import BackendSpec, record_in_manifests, run_parity
from c2f_edge.parity.inputs import build_inputs
from c2f_edge.parity.report import markdown, write_report

pytestmark = pytest.mark.slow


def _check(spec: BackendSpec, n: int | None = 2, reference=None, tmp_path=None) -> dict:
    result = run_parity([spec], build_inputs("photos", n=n), reference=reference or BackendSpec("torch", spec.artifact),
                        quiet=True)
    print("\n" + markdown(result))
    if tmp_path is not None:
        write_report(result, tmp_path / "parity.json")
    (entry,) = result["backends"]
    assert entry["status"] == "pass", entry["failures"]
    assert result["passed"]
    return entry


def test_onnxruntime(onnx_artifact, tmp_path):
    e = _check(BackendSpec("onnxruntime", str(onnx_artifact)), n=None, tmp_path=tmp_path)
    assert e["metrics"]["n_inputs"] == 4 and e["metrics"]["max_abs_diff"] < 1e-3
    assert e["metrics"]["top1_agreement"] == 1.0
    data = json.loads((tmp_path / "parity.json").read_text())
    assert data["schema"] == "c2f-edge.parity/1" and data["backends"][0]["label"] == "onnxruntime"
    assert {"versions", "reference", "inputs", "tolerances"} <= set(data)


def test_onnxruntime_on_raw_onnx(raw_onnx):
    e = _check(BackendSpec("onnxruntime", str(raw_onnx)))
    assert e["label"] == "onnxruntime[raw]"


def test_tvm_host_bundle_and_manifest_record(host_bundle, tmp_path):
    bundle = tmp_path / "host"
    shutil.copytree(host_bundle, bundle)  # the manifest is written: keep the shared fixture pristine
    result = run_parity([BackendSpec("tvm-local", str(bundle))], build_inputs("photos", n=2),
                        reference=BackendSpec("torch", str(bundle)), quiet=True)
    print("\n" + markdown(result))
    assert result["passed"]
    metrics = result["backends"][0]["metrics"]
    # TVM's own arithmetic (other summation order, polynomial erf): close to torch, never bit-identical,
    # so the numbers came from the bundle and not from the reference path
    assert 0 < metrics["max_abs_diff"] < 1e-4
    assert record_in_manifests(result) == [str(bundle)]
    m = json.loads((bundle / "manifest.json").read_text())
    rec = m["parity"]["harness"]["tvm-local[host]"]
    assert rec["status"] == "pass" and rec["schema"] == "c2f-edge.parity/1"
    assert "status" in m["parity"]  # compile's own verify section is kept


def test_coreml_fp32(coreml_fp32):
    e = _check(BackendSpec("coreml", str(coreml_fp32)), n=1)
    assert e["precision"] == "fp32"


def test_coreml_fp16(coreml_fp16):
    e = _check(BackendSpec("coreml", str(coreml_fp16)), n=1)
    assert e["precision"] == "fp16"
    assert e["metrics"]["max_abs_diff"] > 1e-4  # really fp16: not bit-identical to fp32


def test_coreml_fp16_fails_at_fp32_tolerance_and_is_localized(coreml_fp16):
    from c2f_edge.core.metrics import tolerances

    strict = tolerances({"fp16": {k: v for k, v in tolerances()["fp32"].items()}})
    result = run_parity([BackendSpec("coreml", str(coreml_fp16))], build_inputs("photos", n=1),
                        reference=BackendSpec("torch", str(coreml_fp16)), tol=strict, quiet=True)
    print("\n" + markdown(result))
    (e,) = result["backends"]
    assert e["status"] == "fail"
    loc = e["localization"]
    assert loc["status"] == "ok" and loc["diverges_at"] is not None and loc["compared"] >= 10


@pytest.mark.emulated
def test_tvm_arm64_bundle_on_the_emulated_board(arm64_bundle):
    from c2f_edge.board import emulator
    from c2f_edge.core.errors import ToolchainError

    try:
        emulator.check_prerequisites()
    except ToolchainError as e:  # qemu or the arm64 apt setup missing: this machine cannot emulate a board
        pytest.skip(reason=f"emulated aarch64 board not available: {e}")
    e = _check(BackendSpec("tvm-rpc", str(arm64_bundle), {"rpc": "emulated"}, max_inputs=1), n=1)
    assert "emulated" in e["device"]


def test_the_reference_follows_the_artifacts_manifest(tmp_path):
    """An export made from a checkpoint (synthetic seed-3 weights, saved the way official checkpoints
    wrap them): parity's reference is that checkpoint, read from the export's manifest, not the default
    synthetic weights -- which this artifact does not compute."""
    import torch

    from c2f_edge.export import ExportConfig, export_onnx
    from c2f_edge.models.weights import load_model

    model, _ = load_model("n", weights="synthetic", seed=3)
    ckpt = tmp_path / "conv2former_n.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    onnx_dir = export_onnx(ExportConfig(checkpoint=str(ckpt), out=str(tmp_path / "onnx"), parity_inputs=1)).parent
    inputs = build_inputs("photos", n=1)
    result = run_parity([BackendSpec("onnxruntime", str(onnx_dir))], inputs, quiet=True)
    assert result["passed"]
    ref = result["reference"]
    assert ref["weights"]["kind"] == "checkpoint" and ref["weights"]["path"] == str(ckpt)
    wrong = run_parity([BackendSpec("onnxruntime", str(onnx_dir))], inputs, quiet=True, localize_failures=False,
                       reference=BackendSpec("torch", str(onnx_dir), {"weights": "synthetic", "seed": 0}))
    assert not wrong["passed"]
