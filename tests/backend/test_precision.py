"""--precision: which cores may build fp16, and the LayerNorm statistics that must stay fp32."""

from __future__ import annotations

import numpy as np
import pytest

from c2f_edge.backend import precision, targets
from c2f_edge.core.errors import UsageError

FP16_CORE = '{"kind":"llvm","mtriple":"aarch64-linux-gnu","mattr":["+neon","+fullfp16"]}'


@pytest.mark.parametrize("name", ["rpi4", "armv7", "arm64", "android-arm64"])
def test_a_core_without_fp16_is_refused_with_the_targets_that_have_it(name):
    with pytest.raises(UsageError) as e:
        precision.check(targets.get(name), precision.FP16)
    assert f"{name} (" in str(e.value) and "has no fp16 arithmetic" in str(e.value)
    hint = e.value.hint
    assert "rpi5" in hint and "jetson-orin" in hint and "rpi4" not in hint and "+fullfp16" in hint


@pytest.mark.parametrize("name", ["rpi5", "jetson-orin", FP16_CORE])
def test_armv8_2_cores_build_fp16(name):
    precision.check(targets.get(name), precision.FP16)  # no error
    precision.check(targets.get("rpi4"), precision.FP32)  # fp32 goes everywhere


@pytest.mark.parametrize("name", ["mali", "adreno", "opencl-x86"])
def test_mali_and_adreno_build_fp16_with_their_sums_in_fp32(name):
    precision.check(targets.get(name), precision.FP16)  # no error
    gpu = precision.FP16.for_device(gpu=True)
    assert gpu.dtype == "float16" and gpu.sums == "float32" and gpu.norm_stats == "float32" and not gpu.conv_chunk
    assert precision.FP16.for_device(gpu=False) is precision.FP16 and precision.FP32.for_device(gpu=True) is precision.FP32


@pytest.mark.parametrize("name", ['{"kind":"opencl","host":{"kind":"llvm"}}', "vulkan"])
def test_a_gpu_not_known_to_have_half_is_refused_naming_those_that_do(name):
    with pytest.raises(UsageError, match="not known to have half precision") as e:
        precision.check(targets.get(name), precision.FP16)
    assert "mali" in e.value.hint and "adreno" in e.value.hint


def test_the_host_builds_fp16_only_with_avx512_fp16():
    host = targets.get("host")
    if not precision.has_fp16(host.to_json()):
        with pytest.raises(UsageError, match="has no fp16 arithmetic"):
            precision.check(host, precision.FP16)
        pytest.skip(f"this CPU ({host.to_json()['mcpu']}) has no AVX512-FP16: the host cannot build fp16 here")
    precision.check(host, precision.FP16)


def _layer_norm(stats: str, x: np.ndarray) -> np.ndarray:
    """One channels-first LayerNorm kernel on fp16 data, statistics in `stats`, built for this CPU."""
    import tvm
    from tvm import relax

    from c2f_edge.backend.legalize.layer_norm import layer_norm_legalizer

    c = x.shape[1]
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, "float16"))
    with bb.function("main", [data]):
        gamma = relax.const(np.linspace(0.5, 1.5, c).astype("float16"))
        beta = relax.const(np.linspace(-0.1, 0.1, c).astype("float16"))
        out = bb.emit(relax.op.nn.layer_norm(data, gamma, beta, axes=[1], epsilon=1e-6))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps({"relax.nn.layer_norm": layer_norm_legalizer(stats)})(bb.get())
    ex = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy().astype(np.float64), (gamma, beta)


def test_layer_norm_statistics_in_fp32_keep_large_activations_finite():
    """Activations of a few hundred: the sum of (x - mean)^2 passes fp16's 65504, so with fp16 statistics
    the variance is inf and every output collapses to beta (or to nan), while fp32 statistics give the
    right answer within fp16 rounding of the output."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1, 64, 4, 4)) * 300).astype("float16")
    ref = x.astype(np.float64)
    ref = (ref - ref.mean(1, keepdims=True)) / np.sqrt(ref.var(1, keepdims=True) + 1e-6)
    ref = ref * np.linspace(0.5, 1.5, 64)[None, :, None, None] + np.linspace(-0.1, 0.1, 64)[None, :, None, None]

    wide, _ = _layer_norm("float32", x)
    assert np.all(np.isfinite(wide)) and np.max(np.abs(wide - ref)) < 5e-3
    narrow, _ = _layer_norm("float16", x)
    err = np.nan_to_num(np.abs(narrow - ref), nan=np.inf)
    assert np.max(err) > 1.0, "fp16 statistics stayed right: the stress input is too small to show the hazard"
