"""The split reduction (compile --split-reduction, host's default): which kernels it takes, that they compute
what the unscheduled kernel computes, and that each thread sums its own share of the reduction."""

from __future__ import annotations

import numpy as np
import pytest

from c2f_edge.backend.schedules import CpuSpec
from c2f_edge.backend.schedules.split_reduction import (
    ATTR,
    SplitReduction,
    conv_shape,
    fits,
    gemv_fits,
    gemv_shape,
    split_reduction_pass,
)
from tests.backend.schedules.test_rules import _inputs, _run, _shapes
from tests.fixtures.schedules import ARM64, HOST


def _split(kernels, target):
    import tvm

    mod = tvm.IRModule(dict(kernels))
    out = split_reduction_pass(target)(mod)
    return {n: out[n] for n in kernels if out[n].attrs is not None and out[n].attrs.get(ATTR)}


def test_it_takes_the_mlp_fc2_of_stages_3_and_4_and_the_classifier_only(host_kernels):
    """The criterion for convs: weights outweigh the input, and the input is at least 4x the output; for a
    matrix-vector product: the weights dwarf the partial output rows."""
    split = _split(host_kernels, HOST)
    convs = {n: f for n, f in split.items() if "conv2d" in n}
    # input [1, C/8, H, W, 8]: 1024 channels at 14x14 (stage 3), 2048 at 7x7 (stage 4)
    got = sorted((s[0][1] * s[0][4], s[0][2]) for s in (_shapes(f) for f in convs.values()))
    assert got == [(1024, 14), (2048, 7)]
    (head,) = set(split) - set(convs)
    assert _shapes(split[head])[:2] == [(1, 1280), (1280, 1000)]  # pooled features x the classifier's weights
    for f in split.values():
        assert f.attrs.get("tirx.is_scheduled")  # the default rules and the tuning records leave it alone


def test_the_criterion_on_shapes():
    shape = {"rc_extent": 64, "weight_bytes": 1 << 20, "in_bytes": 800 << 10, "out_bytes": 200 << 10}
    assert fits(shape, 2) and fits(shape, 4)
    assert not fits(shape, 1)  # one core: nothing to split
    assert not fits(shape, 3)  # the input-channel blocks do not divide
    assert not fits({**shape, "weight_bytes": 256 << 10}, 2)  # input outweighs the weights (stage 2's fc2)
    assert not fits({**shape, "out_bytes": 800 << 10}, 2)  # fc1: the output is larger than the input
    head = {"k": 1280, "n": 1000, "weight_bytes": 1280 * 1000 * 4, "out_bytes": 1000 * 4}
    assert gemv_fits(head, 2) and gemv_fits(head, 4)
    assert not gemv_fits(head, 1) and not gemv_fits(head, 3)  # one core; rows that do not divide
    assert not gemv_fits({**head, "weight_bytes": 16 * 4 * 1000 * 2 - 4}, 2)  # partial rows not negligible


def test_a_target_without_cores_splits_nothing(host_kernels):
    assert _split(host_kernels, {"kind": "llvm", "mcpu": "znver3"}) == {}


def test_nchw_activations_are_left_to_the_default_rules(host_nchw_kernels):
    """The rule's conv tile assumes channel blocks of one vector; an NCHW conv's last axis is a pixel row.
    The classifier is the same product in either layout."""
    assert [n for n in _split(host_nchw_kernels, HOST) if "matmul" not in n] == []


@pytest.mark.parametrize("target, spec, parts", [
    (HOST, None, 2),
    (ARM64, CpuSpec(lanes=4, registers=32), 4),  # a 4-core board's tiles (weights packed by 4), run here on x86
], ids=["host-2-cores", "arm64-4-cores"])
def test_split_computes_what_the_kernel_computes(host_kernels, arm64_kernels, target, spec, parts):
    from tvm import s_tir

    from c2f_edge.backend.schedules.cpu_spec import cpu_spec
    from c2f_edge.backend.targets import as_target

    kernels = host_kernels if target is HOST else arm64_kernels
    taken = 0
    for name, func in sorted(kernels.items()):
        sch = s_tir.Schedule(func)
        gemv, shape = gemv_shape(sch), conv_shape(sch)
        if not (gemv and gemv_fits(gemv, parts) or shape and fits(shape, parts)):
            continue
        assert SplitReduction(parts).schedule(sch, spec or cpu_spec(as_target(target)))
        taken += 1
        inputs = _inputs(func, seed=taken)
        want = _run(func, HOST, [a.copy() for a in inputs])
        got = _run(sch.mod["main"], HOST, [a.copy() for a in inputs])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=name)
    assert taken == 3


def test_each_thread_sums_its_own_share_of_the_reduction(host_kernels):
    """The partial sums' outermost loop is the parallel one, over the cores: thread t reads input-channel
    blocks [t * C/parts, (t + 1) * C/parts), the share the kernel before left in its cache (or, in the
    classifier, weight rows [t * K/parts, (t + 1) * K/parts), front to back)."""
    from tvm import s_tir, tirx

    for name, func in _split(host_kernels, HOST).items():
        sch = s_tir.Schedule(func)
        partial = next(b for b in sch.get_child_blocks(sch.get_sblock("root"))
                       if sch.get(b).name_hint.endswith("_rf_update"))
        outer = sch.get(sch.get_loops(partial)[0])
        assert outer.kind == tirx.ForKind.PARALLEL and int(outer.extent) == 2
        text = func.script()
        # the partial sums, then their sum with the epilogue (the classifier's 1,000 sums on one thread)
        assert text.count("T.parallel") == (1 if "matmul" in name else 2)


def test_fp16_kernels_are_left_alone(onnx_artifact):
    """Partial sums in fp16 round differently: the rule is measured and judged for fp32 builds only
    (and compile refuses --split-reduction with --precision fp16)."""
    import tvm
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from c2f_edge.backend import pipeline, precision, tvm_build

    rpi5 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76", "mattr": ["+neon", "+fullfp16"],
            "num-cores": 4}
    mod, params = tvm_build.import_onnx(onnx_artifact / "model.onnx")
    fused = pipeline.legalize_and_fuse(tvm_build.bind_params(mod, params), rpi5, precision=precision.get("fp16"))
    kernels = {gv.name_hint: f for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert any("conv2d" in n for n in kernels)
    taken = _split(kernels, rpi5)
    # only the classifier, whose sums an fp16 build keeps in fp32 (precision.py)
    assert [n for n in taken if "conv2d" in n] == []
    assert all(str(ArgInfo.from_prim_func(f)[-1].dtype) == "float32" for f in taken.values())
