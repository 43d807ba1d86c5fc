"""scripts/calibrate_arm.py: its nets are the published architectures, and its held-out calibration."""

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "calibrate_arm.py"
_spec = importlib.util.spec_from_file_location("calibrate_arm", SCRIPT)
cal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cal)


def test_the_nets_have_the_reference_architectures_parameters():
    import torch

    nets = cal._nets()
    # torchvision's resnet18 and mobilenet_v2 (ImageNet heads) have exactly these many parameters.
    for name, params in (("resnet18", 11_689_512), ("mobilenet_v2", 3_504_872)):
        model = nets[name]().eval()
        assert sum(p.numel() for p in model.parameters()) == params, name
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_each_net_is_predicted_with_the_factor_fitted_on_the_other():
    r = cal.calibrate({"a": 10.0, "b": 20.0}, {"a": 20.0, "b": 50.0})
    assert r["a"]["factor_from"] == "b" and r["a"]["factor"] == pytest.approx(2.5)
    assert r["a"]["scaled_ms"] == pytest.approx(25.0) and r["a"]["scaled_error"] == pytest.approx(0.25)
    assert r["b"]["factor"] == pytest.approx(2.0) and r["b"]["scaled_error"] == pytest.approx(-0.2)
    assert r["a"]["raw_over_published"] == pytest.approx(0.5)



@pytest.mark.skipif(not (shutil.which("llvm-mca") and shutil.which("llvm-mc")), reason="llvm-mca is not installed")
def test_hot_blocks_are_checked_against_llvm_mca_hottest_first():
    from c2f_edge.board import cycle_model
    from tests.board.test_cycle_model import BRANCHY, FMA_BOUND, LOAD_BOUND, profile

    p = profile((BRANCHY, 5), (FMA_BOUND, 100), (LOAD_BOUND, 10))
    rows = cal.mca_check(p, cycle_model.core("cortex-a72"), top=2)
    assert [(r["executions"], r["instructions"]) for r in rows] == [(100, len(FMA_BOUND)), (10, len(LOAD_BOUND))]
    for r in rows:  # the words went through llvm-mc's disassembler and llvm-mca whole
        assert r["model_cycles"] == pytest.approx(r["llvm_mca_a57"])
