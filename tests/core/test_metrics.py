import numpy as np
import pytest

from c2f_edge.core.errors import UsageError
from c2f_edge.core.metrics import DEFAULT_TOLERANCES, judge, logit_metrics, tolerances


def _logits(n=3, c=1000, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32) * 3


def test_identical_outputs_are_perfect():
    ref = _logits()
    m = logit_metrics(ref, ref.copy())
    assert m["max_abs_diff"] == 0 and m["mean_abs_diff"] == 0 and m["max_rel_diff"] == 0
    assert m["cosine_min"] == pytest.approx(1.0)
    assert m["top1_agreement"] == 1.0 and m["top5_overlap"] == 1.0
    assert judge(m, DEFAULT_TOLERANCES["fp32"]) == []


def test_metrics_measure_the_difference():
    ref = _logits(2)
    out = ref.copy()
    out[1, 7] += 0.5
    m = logit_metrics(ref, out)
    assert m["max_abs_diff"] == pytest.approx(0.5, rel=1e-6)
    assert m["mean_abs_diff"] == pytest.approx(0.5 / ref.size, rel=1e-4)
    assert m["max_rel_diff"] == pytest.approx(0.5 / np.abs(ref[1]).max(), rel=1e-4)
    assert m["per_input_max_abs_diff"][0] == 0
    assert "max_abs_diff 0.5 > 0.001" in judge(m, DEFAULT_TOLERANCES["fp32"])


def test_cosine_is_the_angle_of_the_worst_input():
    a = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 0.0, 0.0, 0.0]])
    out = np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0],   # orthogonal: 0
                    [2.0, 4.0, 6.0, 0.0, 0.0, 0.0]])  # scaled: 1
    assert logit_metrics(a, out)["cosine_min"] == pytest.approx(0.0, abs=1e-12)
    assert logit_metrics(a[1:], out[1:])["cosine_min"] == pytest.approx(1.0)
    assert logit_metrics(a[1:], -out[1:])["cosine_min"] == pytest.approx(-1.0)
    tilted = a[1:] + np.array([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])  # cos = 14 / (sqrt(14) sqrt(15))
    assert logit_metrics(a[1:], tilted)["cosine_min"] == pytest.approx(np.sqrt(14 / 15), rel=1e-9)
    assert "cosine_min 0.9660918 < 0.99999" in judge(logit_metrics(a[1:], tilted), DEFAULT_TOLERANCES["fp32"])


def test_top1_and_top5_follow_the_ranking():
    ref = np.arange(10, dtype=np.float32)[None].repeat(2, 0)
    out = ref.copy()
    out[0, 0] = 100  # a new winner: top-1 differs, top-5 loses one of five
    m = logit_metrics(ref, out)
    assert m["top1_agreement"] == 0.5
    assert m["top5_overlap"] == pytest.approx((4 / 5 + 1) / 2)


def test_non_finite_output_fails():
    ref = _logits(1)
    out = ref.copy()
    out[0, 3] = np.inf  # fp16 overflow
    m = logit_metrics(ref, out)
    assert not m["finite"]
    assert any("non-finite" in f for f in judge(m, DEFAULT_TOLERANCES["fp16"]))


def test_tolerance_overrides():
    tol = tolerances(["fp16.max_abs=0.5", "int8.top1=0.9"])
    assert tol["fp16"]["max_abs"] == 0.5 and tol["int8"]["top1"] == 0.9
    assert tol["fp32"] == DEFAULT_TOLERANCES["fp32"]
    assert DEFAULT_TOLERANCES["fp16"]["max_abs"] != 0.5  # defaults untouched
    assert tolerances({"fp32": {"max_abs": 1.0}})["fp32"]["max_abs"] == 1.0


@pytest.mark.parametrize("bad", ["fp16.max_abs", "fp16=1", "fp99.max_abs=1", "fp16.maxabs=1", "fp16.max_abs=x"])
def test_bad_overrides_are_usage_errors(bad):
    with pytest.raises(UsageError) as e:
        tolerances([bad])
    assert "--tol" in str(e.value) and e.value.hint


def test_every_class_has_every_key():
    keys = set(DEFAULT_TOLERANCES["fp32"])
    assert all(set(t) == keys for t in DEFAULT_TOLERANCES.values())
