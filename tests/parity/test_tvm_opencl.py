"""The tvm-opencl parity backend: a GPU bundle's own kernels and weights, run on the local OpenCL device
through its twin (compile.twin), judged like every other backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from c2f_edge.core.errors import ArtifactError, UsageError
from c2f_edge.parity.harness import BackendSpec, run_parity
from c2f_edge.parity.inputs import build_inputs

pytestmark = pytest.mark.slow


def _against_onnxruntime(bundle: Path, onnx: Path) -> dict:
    """Judged against ONNX Runtime fp32 on the clean file (the tiny net has no registered variant)."""
    result = run_parity([BackendSpec("tvm-opencl", str(bundle))], build_inputs("photos", n=1),
                        reference=BackendSpec("onnxruntime", str(onnx.parent)), quiet=True)
    (entry,) = result["backends"]
    return entry


def test_a_mali_bundle_passes_on_the_local_opencl_device(cl_device, tiny_mali, tiny_conv2former_onnx):
    entry = _against_onnxruntime(tiny_mali, Path(tiny_conv2former_onnx))
    assert entry["status"] == "pass", entry["failures"]
    assert entry["metrics"]["max_abs_diff"] < 1e-4
    assert "OpenCL" in entry["device"] and entry["label"] == "tvm-opencl[mali]"
    # What PoCL would not enforce, against mali's limits: checked at compile time and after the run.
    limits = entry["gpu_limits"]
    assert set(limits) == {"local memory (bytes)", "kernel arguments", "work items per group"}
    assert all(0 < c["used"] <= c["limit"] for c in limits.values()), limits
    assert limits["work items per group"]["limit"] == 256
    compiled = json.loads((tiny_mali / "manifest.json").read_text())["opencl"]
    assert compiled["limits"]["local memory (bytes)"] == limits["local memory (bytes)"]


def test_an_adreno_bundle_passes_on_the_local_opencl_device(cl_device, tiny_adreno, tiny_conv2former_onnx):
    entry = _against_onnxruntime(tiny_adreno, Path(tiny_conv2former_onnx))
    assert entry["status"] == "pass", entry["failures"]


def test_a_weight_changed_before_the_gpu_compile_fails_and_names_its_block(cl_device, tiny_mutated_mali,
                                                                            tiny_conv2former_onnx):
    entry = _against_onnxruntime(tiny_mutated_mali, Path(tiny_conv2former_onnx))
    assert entry["status"] == "fail"
    loc = entry["localization"]
    assert loc["status"] == "ok" and loc["block"] == "stages.2.0", loc


def test_a_twin_with_other_weights_than_the_bundle_is_refused(cl_device, tiny_mutated_mali, tiny_conv2former_onnx,
                                                              tmp_path):
    # The bundle's manifest made to name the clean ONNX: a twin built from it has the same kernels but
    # other weights, so it would pass where the bundle fails. It is refused instead.
    from c2f_edge.compile.twin import opencl_twin
    from c2f_edge.core.artifacts import sha256_file

    bundle = shutil.copytree(tiny_mutated_mali, tmp_path / "mali")
    man = json.loads((bundle / "manifest.json").read_text())
    man["config"]["onnx"] = man["onnx"]["path"] = str(tiny_conv2former_onnx)
    man["onnx"]["sha256"] = sha256_file(Path(tiny_conv2former_onnx))
    (bundle / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match=r"VM bytecode and weights of .* twin differ from the bundle's own"):
        opencl_twin(bundle)


def test_parity_picks_tvm_opencl_for_a_gpu_bundle_and_refuses_a_cpu_bundle(tiny_mali, tmp_path):
    from c2f_edge.compile.twin import opencl_twin
    from c2f_edge.parity.api import specs_for

    (spec,) = specs_for([str(tiny_mali)])
    assert spec.name == "tvm-opencl" and spec.max_inputs == 2
    (spec,) = specs_for([str(tiny_mali)], rpc="rpc://127.0.0.1:9090")  # a phone over RPC instead
    assert spec.name == "tvm-rpc"
    man = json.loads((tiny_mali / "manifest.json").read_text())
    cpu = shutil.copytree(tiny_mali, tmp_path / "cpu")
    man["runtime"]["device"] = "cpu"
    (cpu / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UsageError, match="is a cpu bundle; tvm-opencl checks OpenCL bundles"):
        opencl_twin(cpu)


def test_the_conv2former_n_mali_bundle_passes_parity_on_pocl(cl_device, mali_bundle, capsys):
    # The real command on the shipped model: one photo (PoCL compiles its ~2,700 kernels first).
    from c2f_edge.cli import main

    code = main(["parity", str(mali_bundle), "-n", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("| tvm-opencl[mali]"))
    assert "PASS" in row and "| 100% | 100% |" in row
