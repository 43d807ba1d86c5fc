"""The tvm-opencl parity backend: a GPU bundle's own kernels and weights, run on the local OpenCL device
through its twin (compile.twin), judged like every other backend."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
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


def _kernel_bodies(bundle: Path) -> dict[str, str]:
    """Each OpenCL kernel's definition (signature and body) in a GPU bundle."""
    from c2f_edge.backend import opencl_module

    _, source = opencl_module.read(opencl_module.module_bytes(bundle / "model.so"))
    return opencl_module.kernel_sources(source)


def test_a_mali_fp16_bundle_stores_half_and_keeps_its_sums_in_fp32(tiny_mali_fp16, tiny_mali, tiny_conv2former_onnx):
    import onnx

    m = json.loads((tiny_mali_fp16 / "manifest.json").read_text())
    prec = m["precision"]
    assert prec["name"] == "fp16" and prec["norm_statistics"] == "float32"
    assert {"layer_norm statistics", "conv and matmul sums", "input and logits"} <= set(prec["kept_fp32"])
    assert prec["conv_accumulation"].startswith("float32")
    bodies = _kernel_bodies(tiny_mali_fp16)
    signature = {name: body[:body.index("{")] for name, body in bodies.items()}
    # Only the boundary reads or writes fp32: the input's cast, and the head (pool, classifier) to the logits.
    wide = sorted(name for name, sig in signature.items() if "float*" in sig)
    assert len(wide) <= 4 and all("cast" in n and "conv2d" not in n for n in wide), wide
    assert sum("half*" in sig for sig in signature.values()) == len(bodies)
    # One norm kernel per LayerNorm, reading half and summing in float (the unfused chain would square
    # (x - mean) in half: its `power` kernels must be gone).
    norms = [n for n in bodies if "channel_norm" in n]
    assert len(norms) >= 4 and not [n for n in bodies if "power" in n]
    for name in norms:
        assert re.search(r"__local float red_buf", bodies[name]) and "convert_float(" in bodies[name], name
    # Every conv's register tile sums in float.
    tiles = {n: re.findall(r"^\s+(half|float) conv2d\w*_local_ptr\[", b, re.MULTILINE) for n, b in bodies.items()}
    tiles = {n: set(t) for n, t in tiles.items() if t}
    assert len(tiles) >= 10 and all(t == {"float"} for t in tiles.values()), tiles
    # The weights are half the bytes: the bundle shrinks by about half the fp32 weights' size.
    weights = sum(4 * int(np.prod(t.dims)) for t in onnx.load(tiny_conv2former_onnx).graph.initializer)
    fp32 = json.loads((tiny_mali / "manifest.json").read_text())["files"]["model.so"]["bytes"]
    assert fp32 - m["files"]["model.so"]["bytes"] > 0.4 * weights


def test_a_mali_fp16_bundle_runs_in_the_fp16_class_where_the_device_has_half(cl_device, tiny_mali_fp16,
                                                                            tiny_conv2former_onnx):
    from c2f_edge.board import opencl
    from c2f_edge.core.errors import UnsupportedError

    if problem := opencl.fp16_problem():
        # Refused before anything is built, in one line that names the missing extension.
        with pytest.raises(UnsupportedError) as e:
            _against_onnxruntime(tiny_mali_fp16, Path(tiny_conv2former_onnx))
        assert "cl_khr_fp16" in str(e.value) and "\n" not in str(e.value) and "--rpc" in e.value.hint
        pytest.skip(f"the local OpenCL device cannot run half kernels: {problem} (PoCL 3.1 offers no "
                    "cl_khr_fp16 on x86)")
    entry = _against_onnxruntime(tiny_mali_fp16, Path(tiny_conv2former_onnx))
    assert entry["status"] == "pass" and entry["precision"] == "fp16", entry["failures"]
