"""`c2f-edge compile --precision fp16`: refused cleanly where the core has no fp16, and on an ARMv8.2
core a bundle that computes in fp16 and passes the fp16 class on the emulated board."""

from __future__ import annotations

import json
import shutil

import pytest

from c2f_edge.board import emulator
from tests.compile.test_stage import _fails, _no_bundle, fake_onnx_dir  # noqa: F401 - a fixture


def test_fp16_on_a_core_without_it_fails_before_building(tmp_path, fake_onnx_dir, capsys):  # noqa: F811 - the fixture
    out = tmp_path / "b"
    err = _fails(["compile", "--target", "rpi4", "--precision", "fp16", "--onnx",
                  str(fake_onnx_dir / "model.onnx"), "--out", str(out)], capsys,
                 "rpi4 (cortex-a72) has no fp16 arithmetic", "rpi5", "+fullfp16")
    assert "jetson-orin" in err
    _no_bundle(out)


@pytest.fixture(scope="module")
def rpi5_fp16(tiny_conv2former_onnx, tmp_path_factory):
    from c2f_edge.compile import CompileConfig, compile_bundle

    out = tmp_path_factory.mktemp("fp16") / "rpi5"
    return compile_bundle(CompileConfig(target="rpi5", onnx=str(tiny_conv2former_onnx), tuning_log="none",
                                        verify="none", precision="fp16", out=str(out)))


def test_the_fp16_manifest_records_the_precision_and_what_stayed_fp32(rpi5_fp16):
    m = json.loads((rpi5_fp16 / "manifest.json").read_text())
    p = m["precision"]
    assert p["name"] == "fp16" and p["dtype"] == "float16" and p["norm_statistics"] == "float32"
    assert {"layer_norm statistics", "gelu arithmetic", "classifier sum", "input and logits"} <= set(p["kept_fp32"])
    assert p["conv_accumulation"].startswith("float16 partial sums of 16 products (at most one vector register")
    assert m["input"]["dtype"] == "float32" and m["output"]["dtype"] == "float32"
    assert m["config"]["precision"] == "fp16"


@pytest.mark.emulated
@pytest.mark.skipif(not shutil.which(emulator.QEMU), reason="qemu-aarch64-static is not installed: run "
                    "scripts/setup_emulator.sh as root")
def test_the_fp16_bundle_passes_the_fp16_class_on_the_emulated_board(rpi5_fp16, tiny_conv2former_onnx):
    """Judged against ONNX Runtime fp32 on the same file (the tiny net has no registered variant)."""
    from c2f_edge.parity.harness import BackendSpec, run_parity
    from c2f_edge.parity.inputs import build_inputs

    report = run_parity([BackendSpec("tvm-rpc", str(rpi5_fp16), {"rpc": "emulated", "timeout": 60})],
                        build_inputs("photos", 2), reference=BackendSpec("onnxruntime", str(tiny_conv2former_onnx)),
                        quiet=True)
    entry = report["backends"][0]
    assert entry["precision"] == "fp16" and entry["tolerance"]["max_rel"] == 0.01
    assert entry["status"] == "pass", entry["failures"]
    # fp16, not fp32 by accident: an fp32 bundle is ~1e-6 off
    assert entry["metrics"]["max_abs_diff"] > 1e-4


def _fma_counts(bundle) -> dict[str, int]:
    """FMAs by lanes in model.so's code (decoded from the A64 encodings, every function's bytes)."""
    import numpy as np

    from c2f_edge.backend.bundle_file import symbols
    from c2f_edge.board import a64

    data = (bundle / "model.so").read_bytes()
    funcs = [s for s in symbols(data) if s.is_function and s.file_offset >= 0 and s.size]
    lo, hi = min(s.file_offset for s in funcs), max(s.file_offset + s.size for s in funcs)
    cls, _ = a64.classify(np.frombuffer(data[lo:hi - (hi - lo) % 4], "<u4"))
    return {name: int((cls == i).sum()) for i, name in enumerate(a64.CLASSES) if name.startswith("fma")}


def test_the_fp16_kernels_fill_neon_registers_with_8_lanes(rpi5_fp16):
    """The vector width follows the dtype: fp16 FMAs are `fmla v.8h`, not half-empty `v.4h` (which the
    schedules emitted while they took their width from fp32)."""
    fma = _fma_counts(rpi5_fp16)
    assert fma["fma_f16x8"] > 1000, fma
    assert fma["fma_f16x4"] <= fma["fma_f16x8"] // 100, fma
