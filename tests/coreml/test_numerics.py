"""fp16 safety of the channels-first LayerNorm: naive fp16 overflows in pow, ours keeps the variance in fp32."""

import numpy as np
import pytest
import torch

from c2f_edge.coreml import check
from c2f_edge.coreml._ct import private_tempdir
from c2f_edge.coreml.convert import CoreMLConfig, convert_module
from c2f_edge.models.conv2former import LayerNorm
from tests.fixtures.coreml import tiny_model

SIZE = 64


def _loud_model():
    """The tiny Conv2Former with its stem output scaled 100x: the first LayerNorms then see |x - mean| in the
    thousands. In fp32 the norm removes the scale, so this is a legitimate model with large activations."""
    m, _ = tiny_model(seed=1)
    with torch.no_grad():
        m.downsample_layers[0][6].weight.mul_(100.0)
    return m


def _max_centered_ln_input(model, x):
    seen = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: seen.append(
        float((i[0] - i[0].mean(1, keepdim=True)).abs().max()))) for mod in model.modules()
        if isinstance(mod, LayerNorm)]
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    for h in hooks:
        h.remove()
    return max(seen), out


def _save(model, tmp_path, name, selector):
    cfg = CoreMLConfig(precision="fp16", image_size=SIZE)
    with private_tempdir():
        ml, _ = convert_module(model, cfg, fp16_selector=selector)
        path = tmp_path / f"{name}.mlpackage"
        ml.save(str(path))
    return path


@pytest.mark.slow
def test_fp16_layernorm_does_not_overflow(tmp_path):
    from c2f_edge.core.images import normalize, sample_photos
    from c2f_edge.coreml.convert import keep_variance_fp32

    model = _loud_model()
    x = normalize(sample_photos(1, size=SIZE)["astronaut"])[None]
    peak, ref = _max_centered_ln_input(model, x)
    assert peak > 256, "the test input must push (x - mean)^2 past fp16's max (65504)"

    naive = _save(model, tmp_path, "naive", None)
    ours = _save(model, tmp_path, "ours", keep_variance_fp32)

    # The naive program: pow runs in fp16 and overflows to inf; the norm then outputs its bias only.
    n_out, n_inter = check.run_package(naive, x, mode="fp16", return_intermediates=True)
    prog = check.load_program(naive)
    pow_vars = [op.outputs[0].name for op in prog.functions["main"].operations if op.op_type == "pow"]
    assert any(np.isinf(n_inter[v]).any() for v in pow_vars)
    naive_err = float(np.abs(n_out - ref).max())

    # Ours: pow/reduce_mean/sqrt of the variance are declared fp32 in the saved program.
    prog = check.load_program(ours)
    ops = prog.functions["main"].operations
    pow_dtypes = {str(op.outputs[0].dtype.__name__) for op in ops if op.op_type == "pow"}
    assert pow_dtypes == {"fp32"}
    o_out, o_inter = check.run_package(ours, x, mode="fp16", return_intermediates=True)
    assert all(np.isfinite(v).all() for v in o_inter.values() if v.dtype.kind == "f")
    ours_err = float(np.abs(o_out - ref).max())
    scale = float(np.abs(ref).max())
    assert int(np.argmax(o_out)) == int(np.argmax(ref))
    assert ours_err < 0.05 * scale, (ours_err, scale)
    assert naive_err > 10 * ours_err, (naive_err, ours_err)
    print(f"peak |x-mean| {peak:.0f}; max |logit| {scale:.3g}; fp16 err naive {naive_err:.3g} vs ours {ours_err:.3g}")
