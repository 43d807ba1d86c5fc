"""scripts/bench_arm.py end to end on a tiny model: the TVM and ONNX Runtime rows counted on the emulated
Cortex-A76."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from c2f_edge.board import insn_count

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_arm.py"
_spec = importlib.util.spec_from_file_location("bench_arm", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.emulated
@pytest.mark.skipif(not shutil.which(insn_count.QEMU),
                    reason="the dynamic qemu-aarch64 (Debian qemu-user) is not installed: make setup-system")
def test_bench_arm_counts_the_tvm_and_onnxruntime_rows_of_a_tiny_model(tmp_path, capsys):
    from tests.compile.test_stage import _tiny_onnx

    _tiny_onnx(tmp_path / "tiny.onnx")
    out = tmp_path / "arm.json"
    assert bench.main(["--board", "rpi5", "--onnx", str(tmp_path / "tiny.onnx"), "--bundle-dir",
                       str(tmp_path / "bundles"), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["cpu"] == "cortex-a76" and doc["model_macs"] == 8 * 32 * 32 * 27
    tvm = doc["rows"]["tvm"]
    assert tvm["instructions"] == sum(tvm["classes"].values()) > 0
    # A direct convolution does each MAC in an FMA lane at least once; 4 would be mostly wasted lanes.
    assert 1.0 <= tvm["fma_lanes_per_mac"] <= 4.0
    assert tvm["max_abs_diff_vs_ort"] < 1e-4
    assert "tvm_tuned" not in doc["rows"] and doc["notes"]["tvm_tuned"].startswith("skipped: untuned")
    # The A76 has fp16 arithmetic: the --precision fp16 bundle is a row, its FMAs 8 fp16 lanes wide.
    fp16 = doc["rows"]["tvm_fp16"]
    assert fp16["classes"]["fma_f16x8"] > 0 and fp16["classes"]["fma_f32x4"] == 0
    assert 1e-5 < fp16["max_abs_diff_vs_ort"] < 2e-2
    ort = doc["rows"]["onnxruntime"]  # ONNX Runtime's aarch64 wheel, on the same core and input
    assert ort["instructions"] == sum(ort["classes"].values()) > 0 and ort["max_abs_diff_vs_ort"] < 1e-4
    assert ort["fma_lanes_per_mac"] >= 1.0
    # Both rows estimated by the A76 cycle model, at the Pi 5's clock; labelled as estimates.
    for r in (tvm, ort):
        assert r["estimate"]["clock_ghz"] == 2.4 and r["estimate"]["ms"] == pytest.approx(r["estimate"]["cycles"] / 2.4e6)
        assert sum(r["estimate"]["bound_by"].values()) == pytest.approx(r["estimate"]["cycles"])
    # ncnn runs pnnx's conversion of the torch model the export manifest names: a bare ONNX file has none.
    assert "ncnn" not in doc["rows"] and doc["notes"]["ncnn"].startswith("skipped: ")
    kernels = dict(doc["top_kernels"]["tvm"])
    assert any(name.startswith("conv2d") for name in kernels)  # blocks attributed to the bundle's kernels
    table = capsys.readouterr().out
    assert "Raspberry Pi 5 (Cortex-A76)" in table and "tvm" in table
    assert "est. ms" in table and "est. ms: ESTIMATES, not measurements" in table
