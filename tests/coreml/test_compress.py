"""Every --compress mode gives a smaller package that is judged in its tolerance class, at build time
and by the parity harness; the same compression of other weights fails."""

import json

import pytest

from c2f_edge.coreml import check
from c2f_edge.parity.harness import BackendSpec, run_parity
from c2f_edge.parity.inputs import build_inputs

CLASS = {"int8": "int8", "int4": "int4", "palettize4": "palettized", "palettize6": "palettized"}

# Upper bounds on package size / uncompressed fp16 size that follow from the bit widths alone
# (8, 4, 4 and 6 bits per weight vs 16), with headroom for scales, LUTs and the small uncompressed tensors.
MAX_RATIO = {"int8": 0.6, "int4": 0.35, "palettize4": 0.35, "palettize6": 0.45}


def _check_manifest(man, mode):
    assert man["compress"]["mode"] == mode
    sizes = man["sizes"]
    assert sizes["package_bytes"] < sizes["uncompressed_bytes"]
    assert sizes["ratio"] < MAX_RATIO[mode]
    # Compression changes the weights, so the logits move: judged against torch fp32 in the mode's class.
    assert man["check"]["vs_uncompressed"]["max_abs_diff"] > 0
    judged = man["check"]["judged"]
    assert judged["passed"] and judged["precision"] == CLASS[mode]
    for key, limit in judged["tolerance"].items():
        value = judged["metrics"]["cosine_min" if key == "cosine" else f"{key}_diff"]
        assert value >= limit if key == "cosine" else value <= limit, (key, value, limit)
    assert "compress_s" in man["times"]


@pytest.mark.slow
def test_cli_int8_reports_size_and_deviation(coreml_cli_int8):
    out, rc, stdout, stderr = coreml_cli_int8
    assert rc == 0, stderr
    man = json.loads((out / "manifest.json").read_text())
    _check_manifest(man, "int8")
    assert "MB uncompressed ->" in stdout and "vs uncompressed package" in stdout
    assert "Torch version" not in stderr and "Failed to load _MLModel" not in stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int4", "palettize4", "palettize6"])
def test_compress_mode(coreml_compressed, mode):
    out = coreml_compressed(mode)
    man = json.loads((out / "manifest.json").read_text())
    _check_manifest(man, mode)
    prog = check.load_program(out)
    kinds = {op.op_type for op in prog.functions["main"].operations if op.op_type.startswith("constexpr_")}
    assert kinds, "a compressed program stores its weights in constexpr_* ops"


@pytest.mark.slow
def test_parity_judges_a_compressed_package_in_its_class(coreml_cli_int8, tmp_path):
    """The int8 package passes the int8 class on 9 inputs; the same int8 compression of other weights
    (synthetic seed 1) is judged against the seed-0 reference and fails it on every check."""
    from c2f_edge.coreml.convert import CoreMLConfig, build_package

    good = coreml_cli_int8[0]
    inputs = build_inputs(["photos", "random"], n=5)
    (e,) = run_parity([BackendSpec("coreml", str(good))], inputs, quiet=True, localize_failures=False)["backends"]
    assert e["precision"] == "int8" and e["label"] == "coreml[fp16+int8]"
    assert e["status"] == "pass", e["failures"]
    wrong = build_package(CoreMLConfig(weights="synthetic", seed=1, compress="int8", check_images=0,
                                       out=str(tmp_path / "seed1")))
    (e,) = run_parity([BackendSpec("coreml", str(wrong))], inputs.take(2), quiet=True, localize_failures=False,
                      reference=BackendSpec("torch", str(good)))["backends"]
    assert e["status"] == "fail"
    assert {f.split()[0] for f in e["failures"]} == {"max_abs_diff", "mean_abs_diff", "max_rel_diff",
                                                     "cosine_min", "top1_agreement", "top5_overlap"}


def test_compressed_classes_reject_unrelated_logits(synthetic_model):
    """A package with random weights gives logits unrelated to the reference: every compressed class
    must refuse them, and no class may allow a max_abs as large as the model's largest logit (the int4
    class once allowed 3.0, more than the synthetic model's whole logit range)."""
    import numpy as np
    import torch

    from c2f_edge.core.images import photo_batch
    from c2f_edge.core.metrics import DEFAULT_TOLERANCES, judge, logit_metrics

    with torch.no_grad():
        ref = synthetic_model(torch.from_numpy(photo_batch(4))).numpy()
    unrelated = np.random.default_rng(0).permutation(ref.ravel()).reshape(ref.shape)  # same values, no relation
    for cls in ("int8", "int4", "palettized"):
        failed = {f.split()[0] for f in judge(logit_metrics(ref, unrelated), DEFAULT_TOLERANCES[cls])}
        assert {"cosine_min", "max_rel_diff"} <= failed, cls
        assert DEFAULT_TOLERANCES[cls]["max_abs"] < np.abs(ref).max(), (cls, float(np.abs(ref).max()))


def test_a_package_outside_its_class_fails_the_build_check():
    """build_package judges the saved package before it is written: int8 logits that are noise raise,
    the same logits with int8-sized error pass."""
    import numpy as np

    from c2f_edge.core.errors import OutputMismatchError
    from c2f_edge.coreml.convert import judge_package

    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((1, 1000)).astype(np.float32) * 0.8 for _ in range(3)]
    close = [r + rng.standard_normal(r.shape).astype(np.float32) * 0.01 for r in ref]
    assert judge_package(close, ref, "int8")["passed"]
    noise = [rng.standard_normal((1, 1000)).astype(np.float32) * 0.8 for _ in range(3)]
    with pytest.raises(OutputMismatchError, match=r"saved package \(int8\) disagrees with PyTorch fp32.*cosine_min"):
        judge_package(noise, ref, "int8")


def test_build_package_refuses_a_converted_program_outside_its_class_and_writes_nothing(tmp_path, monkeypatch):
    """End to end through build_package: a converter that produced another network's program (the tiny net
    with other weights stands in for a conversion bug) fails the check on the saved package in one line,
    and OUT is not written; the same build of the right program passes."""
    from c2f_edge.core.errors import OutputMismatchError
    from c2f_edge.coreml import convert
    from tests.fixtures.coreml import tiny_model

    model, source = tiny_model()

    def build(out):
        cfg = convert.CoreMLConfig(weights="synthetic", out=str(out), precision="fp32", check_images=2)
        return convert.build_package(cfg, model=model, source=source)

    good = build(tmp_path / "good")
    assert json.loads((good / "manifest.json").read_text())["check"]["judged"]["passed"]

    real = convert.convert_module
    other, _ = tiny_model(seed=1)
    monkeypatch.setattr(convert, "convert_module", lambda prepared, cfg, **kw: real(other, cfg, **kw))
    with pytest.raises(OutputMismatchError, match=r"saved package \(fp32\) disagrees with PyTorch fp32") as e:
        build(tmp_path / "bad")
    assert "\n" not in str(e.value) and e.value.hint
    assert not (tmp_path / "bad").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]
